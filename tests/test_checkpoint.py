"""Checkpoints: forced crashes, signals, bad input, info.  Real processes.

Scripts run with ``run_script`` (a real ``python script.py``); waits are on
files or output lines, with timeouts, never plain sleeps.
"""
import signal
import time

import pytest

import job_stream
from checkpoint_helpers import (PIPELINE, expected, job_stream_command,
                                rerun_until_done, result_of, start, wait_for)


def rerun(run_script, args, env=None):
    """Run PIPELINE until it exits 0: (runs, last process)."""
    return rerun_until_done(
        lambda: run_script(PIPELINE, *args, check=False, env=env))


def test_forced_crash_after_every_item_completes(run_script, tmp_path):
    runs, proc = rerun(run_script, ['run.chkpt', '_ForceCheckpointJob'])
    assert runs > 3   # it really crashed and resumed, repeatedly
    assert result_of(proc) == expected()
    assert (tmp_path / 'init.log').read_text() == 'init\n'
    assert (tmp_path / 'run.chkpt.done').exists()
    assert not (tmp_path / 'run.chkpt').exists()
    assert proc.stderr.count('Using run.chkpt as checkpoint file') == 1


def test_forced_crash_message_and_state(run_script, tmp_path):
    proc = run_script(PIPELINE, 'run.chkpt', '_ForceCheckpointJob', check=False)
    assert proc.returncode == 1
    assert 'was forced by a job' in proc.stderr
    assert 'Checkpoint took ' in proc.stderr
    assert 'ms, resuming computation' in proc.stderr
    info = job_stream.checkpointInfo(str(tmp_path / 'run.chkpt'))
    assert isinstance(info, str) and 'open reductions' in info
    assert info.reductions.get('total') == 1
    assert abs(info.taken - time.time()) < 120
    assert set(info.parts) == {'stores', 'queue', 'input', 'results', 'stats'}
    assert all(size > 0 for size in info.parts.values())
    assert info.version == job_stream.__version__


def test_forced_checkpoint_and_go(run_script, tmp_path):
    proc = run_script(PIPELINE, 'run.chkpt', '_ForceCheckpointAndGoJob')
    assert result_of(proc) == expected()
    assert proc.stderr.count('Checkpoint took') >= 2  # start + forced
    assert (tmp_path / 'run.chkpt.done').exists()


def test_forced_checkpoint_without_checkpointing_is_an_error(run_script):
    proc = run_script(PIPELINE, '-', '_ForceCheckpointJob', check=False)
    assert proc.returncode != 0
    assert 'checkpointing is off' in proc.stderr


def test_done_marker_refuses(run_script, tmp_path):
    run_script(PIPELINE, 'run.chkpt', '-')
    done = (tmp_path / 'run.chkpt.done').read_text()
    assert 'finished' in done and 'delete it' in done
    proc = run_script(PIPELINE, 'run.chkpt', '-', check=False)
    assert proc.returncode != 0
    assert 'This run already finished' in proc.stderr
    assert 'Delete run.chkpt.done to start a new run' in proc.stderr
    assert 'RESULT' not in proc.stdout
    assert (tmp_path / 'run.chkpt.done').read_text() == done
    assert (tmp_path / 'init.log').read_text() == 'init\n'


def test_missing_folder(run_script, tmp_path):
    proc = run_script(PIPELINE, 'nowhere/run.chkpt', '-', check=False)
    assert proc.returncode != 0
    assert ('the folder containing the requested checkpoint file does not '
            'exist: nowhere/run.chkpt') in proc.stderr
    assert not (tmp_path / 'init.log').exists()   # before any work


def _real_checkpoint(run_script, tmp_path):
    proc = run_script(PIPELINE, 'run.chkpt', '_ForceCheckpointJob', check=False)
    assert proc.returncode == 1, proc.stderr
    (tmp_path / 'init.log').unlink()
    return (tmp_path / 'run.chkpt').read_bytes()


def _flip_last_byte(data):
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def _set_header(data, key, value):
    import json
    magic, line, rest = data.split(b'\n', 2)
    header = json.loads(line)
    header[key] = value
    return magic + b'\n' + json.dumps(header).encode() + b'\n' + rest


@pytest.mark.parametrize('damage,message', [
    (lambda d: b'hello, I am a text file\n', 'is not a job_stream checkpoint'),
    (lambda d: d[:len(d) - 10], 'is truncated'),
    (lambda d: d[:30], 'corrupted header'),
    (_flip_last_byte, 'is corrupted: its checksum does not match'),
    (lambda d: _set_header(d, 'fingerprint', '0123456789abcdef'),
     'was written by a different pipeline'),
    (lambda d: _set_header(d, 'version', '0.0.1'), 'was written by job_stream 0.0.1'),
    (lambda d: _set_header(d, 'format', 99), 'has format 99'),
], ids=['foreign', 'truncated', 'header', 'checksum', 'pipeline', 'version',
        'format'])
def test_bad_checkpoint_files(run_script, tmp_path, damage, message):
    good = _real_checkpoint(run_script, tmp_path)
    bad = damage(good)
    (tmp_path / 'run.chkpt').write_bytes(bad)
    proc = run_script(PIPELINE, 'run.chkpt', '-', check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert 'left untouched' in proc.stderr
    assert (tmp_path / 'run.chkpt').read_bytes() == bad   # not overwritten
    assert not (tmp_path / 'init.log').exists()
    assert 'RESULT' not in proc.stdout


def test_checkpoint_of_another_pipeline_refused(run_script, tmp_path):
    _real_checkpoint(run_script, tmp_path)
    before = (tmp_path / 'run.chkpt').read_bytes()
    # Same script but one more stage: a different structure.
    proc = run_script(PIPELINE, 'run.chkpt', '_ForceCheckpointAndGoJob',
                      check=False)
    assert proc.returncode != 0
    assert 'was written by a different pipeline' in proc.stderr
    assert (tmp_path / 'run.chkpt').read_bytes() == before


WRITE_FAIL = '''
import resource, signal, sys, time
from job_stream.inline import Work, Object
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
with Work(range(40), processes=1, report=False, checkpointFile='run.chkpt',
          checkpointInterval=0) as w:
    @w.job
    def big(x):
        time.sleep(0.02)
        return 'x' * 20_000
    @w.reduce(store=lambda: Object(items=[]))
    def keep(store, inputs, others):
        store.items.extend(inputs)
'''


def test_write_failure_keeps_previous(run_script, tmp_path):
    """A file size limit stands in for a full disk."""
    proc = run_script(WRITE_FAIL, check=False)
    assert proc.returncode != 0
    assert 'Could not write checkpoint file: run.chkpt' in proc.stderr
    assert 'The previous checkpoint, if any, is kept' in proc.stderr
    assert not (tmp_path / 'run.chkpt.new').exists()
    info = job_stream.checkpointInfo(str(tmp_path / 'run.chkpt'))  # intact
    assert info.parts['stores'] < 200_000


def test_write_failure_new_is_directory(run_script, tmp_path):
    (tmp_path / 'run.chkpt.new').mkdir()
    proc = run_script(PIPELINE, 'run.chkpt', '-', check=False)
    assert proc.returncode != 0
    assert 'Could not write checkpoint file: run.chkpt' in proc.stderr
    assert not (tmp_path / 'run.chkpt').exists()


UNPICKLABLE = '''
import threading
from job_stream.inline import Work, Object
with Work(range(5), processes=1, report=False, checkpointFile='run.chkpt',
          checkpointInterval=0) as w:
    @w.job
    def same(x):
        return x
    @w.reduce(store=lambda: Object(lock=threading.Lock(), n=0))
    def locked_total(store, inputs, others):
        store.n += len(inputs)
'''


def test_unpicklable_store_names_stage(run_script, tmp_path):
    proc = run_script(UNPICKLABLE, check=False)
    assert proc.returncode != 0
    assert "the store of stage 'locked_total' cannot be pickled" in proc.stderr


UNPICKLABLE_WORK = '''
from job_stream.inline import Work, Multiple
with Work([1], processes=1, report=False, checkpointFile='run.chkpt',
          checkpointInterval=0) as w:
    @w.job(useMultiprocessing=False)
    def make(x):
        return Multiple([(i for i in range(3)) for _ in range(2000)])
    @w.job(useMultiprocessing=False, timeout=60)  # a chain of its own
    def consume(g):
        return sum(g)
'''


def test_unpicklable_work_names_stage(run_script):
    proc = run_script(UNPICKLABLE_WORK, check=False)
    assert proc.returncode != 0
    assert "work queued for stage 'consume' cannot be pickled" in proc.stderr


GENERATOR = '''
import os, sys
from job_stream import inline
from job_stream.inline import Work
def files():
    names = sorted(os.listdir('data'), reverse=os.environ.get('ORDER') == 'rev')
    yield from names
with Work(files(), processes=1, report=False, checkpointFile='run.chkpt') as w:
    @w.job
    def size(name):
        return len(name)
    w.job(inline._ForceCheckpointJob)
    @w.result
    def out(r):
        print('RESULT', r, flush=True)
'''


def test_generator_resumes_by_replay(run_script, tmp_path):
    (tmp_path / 'data').mkdir()
    for i in range(30):
        (tmp_path / 'data' / ('f' * (i + 1))).write_text('')
    seen = []
    for runs in range(1, 60):
        proc = run_script(GENERATOR, check=False)
        seen += [int(l.split()[1]) for l in proc.stdout.splitlines()
                 if l.startswith('RESULT ')]
        if proc.returncode == 0:
            break
        assert proc.returncode == 1, proc.stderr
    assert runs > 2
    assert sorted(seen) == list(range(1, 31))   # nothing lost, nothing twice


def test_nondeterministic_generator_refused(run_script, tmp_path):
    (tmp_path / 'data').mkdir()
    for i in range(30):
        (tmp_path / 'data' / ('f' * (i + 1))).write_text('')
    proc = run_script(GENERATOR, check=False)
    assert proc.returncode == 1, proc.stderr
    before = (tmp_path / 'run.chkpt').read_bytes()
    proc = run_script(GENERATOR, check=False, env={'ORDER': 'rev'})
    assert proc.returncode == 1
    assert 'The input does not replay the same way' in proc.stderr
    assert 'RESULT' not in proc.stdout
    assert (tmp_path / 'run.chkpt').read_bytes() == before


ENV = '''
from job_stream.inline import Work
import sys
kw = {'checkpointFile': sys.argv[1]} if len(sys.argv) > 1 else {}
print(Work([1, 2], processes=1, report=False, **kw).run())
'''


def test_env_variable_and_explicit_wins(run_script, tmp_path):
    proc = run_script(ENV, env={'JOBS_CHECKPOINT': 'env.chkpt'})
    assert proc.stderr.count('Using env.chkpt as checkpoint file') == 1
    assert (tmp_path / 'env.chkpt.done').exists()
    proc = run_script(ENV, 'mine.chkpt', env={'JOBS_CHECKPOINT': 'env.chkpt'})
    assert 'Using mine.chkpt as checkpoint file' in proc.stderr
    assert 'env.chkpt' not in proc.stderr
    assert (tmp_path / 'mine.chkpt.done').exists()
    proc = run_script(ENV)
    assert 'checkpoint' not in proc.stderr


TWO_RUNS = '''
import sys, job_stream
from job_stream.inline import Work
first = sys.argv[1] == 'first'
job_stream.map(abs, [-1], report=False, checkpointFile='a.chkpt' if first else None)
try:
    job_stream.map(abs, [-1], report=False, checkpointFile=None if first else 'b.chkpt')
except ValueError as e:
    print('REFUSED', e)
'''


@pytest.mark.parametrize('which', ['first', 'second'])
def test_only_one_checkpointed_run_per_process(run_script, which):
    proc = run_script(TWO_RUNS, which)
    assert 'REFUSED Cannot run more than one job_stream when using checkpoints' \
        in proc.stdout


def test_bad_interval(run_script):
    proc = run_script(ENV.replace("report=False", "report=False, "
                                  "checkpointInterval=-1"), 'x.chkpt', check=False)
    assert proc.returncode != 0
    assert 'checkpointInterval must be a number of seconds >= 0' in proc.stderr


# -- signals -------------------------------------------------------------------
SLOW = '''
import os, sys, time
from job_stream.inline import Work, Object
with Work(range(int(sys.argv[1])), processes=2, report=False,
          checkpointFile='run.chkpt', checkpointInterval=600) as w:
    @w.job
    def slow(x):
        open(f'started.{x}', 'w').close()
        time.sleep(float(os.environ.get('NAP', '0.05')))
        return x
    @w.reduce(store=lambda: Object(total=0, n=0), emit=lambda s: (s.total, s.n))
    def total(store, inputs, others):
        if os.path.exists('hold'):   # lets a test hold the primary here
            open('holding', 'w').close()
            deadline = time.monotonic() + 60
            while os.path.exists('hold') and time.monotonic() < deadline:
                time.sleep(0.01)
        store.total += sum(inputs)
        store.n += len(inputs)
    @w.result
    def show(r):
        print('RESULT', r, flush=True)
'''


@pytest.mark.parametrize('sig', ['SIGTERM', 'SIGINT', 'SIGUSR1'])
def test_signal_checkpoints_and_resumes(run_script, tmp_path, sig):
    proc = start(tmp_path, SLOW, 60, env={'NAP': '0.1'})
    wait_for(lambda: (tmp_path / 'run.chkpt').exists()
             and (tmp_path / 'started.10').exists(), what='progress')
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f'{sig} received: writing a checkpoint, then exiting' in err
    assert f'stopped by {sig} after writing the checkpoint' in err
    assert err.count('Checkpoint took') >= 2
    assert 'RESULT' not in out
    info = job_stream.checkpointInfo(str(tmp_path / 'run.chkpt'))
    assert info.input_position >= 10
    proc = run_script(SLOW, 60)
    assert 'RESULT (1770, 60)' in proc.stdout


def test_sigterm_to_the_job_stream_command_reaches_the_run(run_script, tmp_path):
    """Without hosts the command runs the program directly; a SIGTERM sent
    to the command (not to its process group) is passed on."""
    proc = start(tmp_path, SLOW, 60, env={'NAP': '0.1'},
                 launcher=job_stream_command('-c', 'run.chkpt'))
    wait_for(lambda: (tmp_path / 'started.10').exists(), what='progress',
             proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert 'stopped by SIGTERM after writing the checkpoint' in err
    proc = run_script(SLOW, 60)
    assert 'Resuming from the checkpoint' in proc.stderr
    assert 'RESULT (1770, 60)' in proc.stdout


def test_sigint_twice_exits_at_once(tmp_path):
    (tmp_path / 'hold').write_text('')
    proc = start(tmp_path, SLOW, 20, env={'NAP': '0'})
    wait_for(lambda: (tmp_path / 'holding').exists(), what='the reducer')
    proc.send_signal(signal.SIGINT)
    # wait for the first interrupt to be seen, then press Ctrl-C again
    line = ''
    deadline = time.monotonic() + 60
    while 'SIGINT received' not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    assert 'press Ctrl-C again to exit at once' in line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert 'Second interrupt: exiting without waiting' in err
    assert (tmp_path / 'hold').exists()   # it did not wait for the reducer


# -- the journal ---------------------------------------------------------------
JOURNAL = '''
import os, signal, time
from job_stream import inline
from job_stream.inline import Work
with Work(range(40), processes=1, report=False, checkpointFile='run.chkpt',
          checkpointInterval=600) as w:
    @w.job
    def work(x):
        if x == 30 and not os.path.exists('killed'):
            open('killed', 'w').close()
            deadline = time.monotonic() + 30   # let results be delivered
            while time.monotonic() < deadline and (not os.path.exists(
                    'delivered') or len(open('delivered').readlines()) < 10):
                time.sleep(0.01)
            os.kill(os.getppid(), signal.SIGKILL)   # the primary dies
            time.sleep(60)
        return x
    @w.result
    def show(r):
        with open('delivered', 'a') as f:
            f.write(f'{r}\\n')
'''


def test_journal_limits_redelivery(run_script, tmp_path):
    proc = run_script(JOURNAL, check=False)
    assert proc.returncode == -signal.SIGKILL
    before = (tmp_path / 'delivered').read_text().split()
    journal = (tmp_path / 'run.chkpt.journal').read_text().splitlines()
    # results delivered after the last checkpoint: without the journal, each
    # of them would be delivered again
    assert len(before) >= 10 and len(journal) >= 3
    run_script(JOURNAL)
    delivered = [int(x) for x in (tmp_path / 'delivered').read_text().split()]
    assert sorted(set(delivered)) == list(range(40))
    assert len(delivered) - 40 <= 1   # at most the handler that was running


# -- the class API, and results kept for finish ----------------------------------
CLASSES = '''
import sys
from job_stream import common

class Crashy(common.Job):
    def handleWork(self, work):
        if work % 7 == 0:
            self._forceCheckpoint(True)
        self.emit(work * 2)

class Total(common.Reducer):
    def handleInit(self, store):
        store.total = 0
    def handleAdd(self, store, work):
        store.total += work
    def handleDone(self, store):
        self.emit(store.total)

common.work = list(range(50))
common.run({'reducer': Total, 'jobs': [Crashy]}, processes=2, report=False,
           checkpointFile='classes.chkpt', checkpointSyncInterval=0)
'''


def test_class_api_force_checkpoint(run_script, tmp_path):
    for runs in range(1, 40):
        proc = run_script(CLASSES, check=False)
        if proc.returncode == 0:
            break
        assert 'was forced by a job' in proc.stderr, proc.stderr
    assert runs > 2
    assert proc.stdout.split() == [str(2 * sum(range(50)))]


FINISH = '''
from job_stream import inline
from job_stream.inline import Work
with Work(range(40), processes=2, report=False,
          checkpointFile='finish.chkpt') as w:
    @w.job
    def plus(x):
        return x + 1000
    w.job(inline._ForceCheckpointJob)
    @w.finish
    def done(results):
        print('FINISH', sorted(results))
'''


def test_finish_results_exactly_once(run_script):
    for runs in range(1, 60):
        proc = run_script(FINISH, check=False)
        if proc.returncode == 0:
            break
        assert proc.returncode == 1, proc.stderr
        assert 'FINISH' not in proc.stdout
    assert runs > 2
    assert proc.stdout.strip() == f'FINISH {list(range(1000, 1040))}'


def test_checkpoint_info_refuses_foreign_file(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_text('not a checkpoint')
    with pytest.raises(job_stream.checkpoint.CheckpointError,
                       match='is not a job_stream checkpoint'):
        job_stream.checkpointInfo(str(path))
    assert path.read_text() == 'not a checkpoint'
