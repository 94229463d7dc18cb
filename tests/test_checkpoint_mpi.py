"""Checkpoints under MPI: real ``mpiexec -n 3`` (and the ``job_stream``
command), real kills and signals, resumed until done.

Only rank 0 holds the Processor and reads or writes the checkpoint; batches
in flight on the other ranks when it is taken are queued again in it.  The
multi-host case (a host cut or killed, then ``job_stream -c`` again) is in
tests/test_mpi_hosts.py.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

import job_stream
from checkpoint_helpers import (LOCAL_HOSTS, MPIEXEC3, PIPELINE,
                                expected, job_stream_command, kill_loop_test,
                                rerun_until_done, result_of, start,
                                wait_for, wait_no_processes_in)
from conftest import script_env


def run3(run_script, *args, env=None, launcher=MPIEXEC3):
    return run_script(PIPELINE, *args, check=False, launcher=launcher,
                      env=dict({'PROCESSES': '1'}, **(env or {})), timeout=120)


# -- forced checkpoint and crash after every item ----------------------------------
OTHER_RANKS_ELSEWHERE = '''
import os
from job_stream.inline import getRank
if getRank() > 0:   # where a stray read or write by rank > 0 would show
    os.chdir('elsewhere')
'''


def test_forced_crash_after_every_item_completes(run_script, tmp_path):
    """Every run checkpoints and exits after a batch; re-runs finish with the
    uninterrupted run's result, init ran once, and ranks > 0 never touch the
    checkpoint (their working folder holds a finished one and junk)."""
    plain = run3(run_script, '-', '-')
    assert plain.returncode == 0, plain.stderr
    assert result_of(plain) == expected()
    (tmp_path / 'init.log').unlink()
    other = tmp_path / 'elsewhere'
    other.mkdir()
    (other / 'run.chkpt').write_text('junk')
    (other / 'run.chkpt.done').write_text('finished')
    code = OTHER_RANKS_ELSEWHERE + PIPELINE

    def once():
        return run_script(code, 'run.chkpt', '_ForceCheckpointJob',
                          check=False, launcher=MPIEXEC3, timeout=120,
                          env={'PROCESSES': '1'})
    runs, proc = rerun_until_done(once)
    assert runs > 3, proc.stderr   # it really crashed and resumed, repeatedly
    assert result_of(proc) == result_of(plain)
    assert (tmp_path / 'init.log').read_text() == 'init\n'
    assert (tmp_path / 'run.chkpt.done').exists()
    assert not (tmp_path / 'run.chkpt').exists()
    assert proc.stderr.count('Using run.chkpt as checkpoint file') == 1
    assert sorted(p.name for p in other.iterdir()) == ['run.chkpt',
                                                       'run.chkpt.done']
    assert (other / 'run.chkpt').read_text() == 'junk'


def test_forced_crash_message_once(run_script, tmp_path):
    """Ranks > 0 exit with the same status, quietly: rank 0 said why."""
    proc = run3(run_script, 'run.chkpt', '_ForceCheckpointJob')
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count('was forced by a job') == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    info = job_stream.checkpointInfo(str(tmp_path / 'run.chkpt'))
    assert info.reductions.get('total') == 1


# -- refusals at start -----------------------------------------------------------
def _foreign(tmp_path):
    (tmp_path / 'run.chkpt').write_text('not a checkpoint')
    return 'run.chkpt', 'is not a job_stream checkpoint'


def _done(tmp_path):
    (tmp_path / 'run.chkpt.done').write_text('finished')
    return 'run.chkpt', 'This run already finished'


def _no_folder(tmp_path):
    return 'nowhere/run.chkpt', 'checkpoint file does not exist: nowhere/'


@pytest.mark.parametrize('case', [_foreign, _done, _no_folder],
                         ids=['foreign', 'done', 'no-folder'])
def test_refusal_at_start_ends_every_rank(run_script, tmp_path, case):
    """Rank 0 refuses before any work; the other ranks, which wait for the
    run, end too (they used to wait forever)."""
    path, message = case(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    t0 = time.monotonic()
    proc = run3(run_script, path, '-')
    took = time.monotonic() - t0
    assert proc.returncode != 0
    assert message in proc.stderr
    assert took < 30, took   # no waiting on heartbeats, no hang
    assert not (tmp_path / 'init.log').exists()
    assert 'RESULT' not in proc.stdout
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()
             if p.is_file() and p.name != 'script.py'}
    assert after == {k: v for k, v in before.items() if k != 'script.py'}
    wait_no_processes_in(tmp_path)


def test_rank0_skipping_a_run_does_not_hang(run_script):
    code = '''
    from job_stream.inline import Work, getRank
    if getRank() > 0:
        w = Work(range(10), report=False)
        w.job(abs)
        w.run()
    print('rank', getRank(), 'done')
    '''
    t0 = time.monotonic()
    proc = run_script(code, launcher=('mpiexec', '-n', '2'), check=False,
                      timeout=60)
    assert proc.returncode != 0
    assert 'Rank 0 (host' in proc.stderr
    assert 'finished its script without ending run 1' in proc.stderr
    assert time.monotonic() - t0 < 30


# -- kill -9 -----------------------------------------------------------------------
MPI_KILLS = dict(launcher=MPIEXEC3, processes=1, victims=(0, 1, 2))


@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_fast(tmp_path, mode):
    """Kill rank 0, then rank 1, then rank 2 (mpiexec ends the others)."""
    kill_loop_test(tmp_path, mode, n=150, kills=3, seed='mpi-' + mode,
                   **MPI_KILLS)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_many(tmp_path, mode):
    kill_loop_test(tmp_path, mode, n=900, kills=20, seed='mpi-many-' + mode,
                   **MPI_KILLS)


# -- signals and rank loss with batches held by other ranks ---------------------------
# Items run on every rank; on ranks > 0 they wait for the file ``release``, so
# a test can stop the run while those ranks surely hold batches.
HELD = '''
import os, sys, time
from job_stream.inline import Work, Object, getRank
os.environ['TEST_RANK'] = str(getRank())   # inherited by this rank's workers
with open(f'pid.{getRank()}.new', 'w') as f:
    f.write(str(os.getpid()))
os.replace(f'pid.{getRank()}.new', f'pid.{getRank()}')
with Work(range(60), processes=1, report=False,
          checkpointInterval=float(os.environ.get('INTERVAL', '600'))) as w:
    @w.job
    def slow(x):
        rank = os.environ['TEST_RANK']
        open(f'started.{x}.{rank}', 'w').close()
        deadline = time.monotonic() + 60
        while (rank != '0' and not os.path.exists('release')
               and time.monotonic() < deadline):
            time.sleep(0.01)
        time.sleep(0.02)
        return x
    @w.reduce(store=lambda: Object(total=0, n=0), emit=lambda s: (s.total, s.n))
    def total(store, inputs, others):
        store.total += sum(inputs)
        store.n += len(inputs)
    @w.result
    def show(r):
        print('RESULT', r, flush=True)
'''


def _started(tmp_path):
    """{item: set of ranks} of the items whose job started; cleared."""
    out = {}
    for p in tmp_path.glob('started.*'):
        _, x, rank = p.name.split('.')
        out.setdefault(int(x), set()).add(int(rank))
        p.unlink()
    return out


def _held_on_every_rank(tmp_path):
    ranks = {p.name.split('.')[2] for p in tmp_path.glob('started.*')}
    return {'0', '1', '2'} <= ranks and len(list(tmp_path.glob('started.*'))) > 6


def _checkpointed(tmp_path):
    """Input items read as of the last complete checkpoint (0 if none)."""
    try:
        return job_stream.checkpointInfo(
            str(tmp_path / 'run.chkpt')).input_position
    except job_stream.checkpoint.CheckpointError:
        return 0


def _resume_and_check(tmp_path, launcher, held, env):
    """Re-run with the items released: it resumes, runs the held items
    again, and ends with the uninterrupted run's result."""
    _started(tmp_path)   # forget what the stopped run started
    (tmp_path / 'release').write_text('')
    proc = start(tmp_path, HELD, launcher=launcher, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert 'Resuming from the checkpoint' in err
    assert 'RESULT (1770, 60)' in out
    again = _started(tmp_path)
    assert held <= set(again), (held, sorted(again))   # queued again
    return again


LAUNCHERS = {
    'mpiexec': (MPIEXEC3, {'JOBS_CHECKPOINT': 'run.chkpt'}),
    'job_stream': (job_stream_command('-c', 'run.chkpt', '--host', LOCAL_HOSTS),
                   {}),
}


@pytest.mark.parametrize('launcher,sig', [
    ('mpiexec', 'SIGTERM'), ('job_stream', 'SIGTERM'), ('job_stream', 'SIGINT'),
])
def test_signal_to_launcher_checkpoints_and_resumes(tmp_path, launcher, sig):
    """SLURM's walltime SIGTERM (or Ctrl-C) reaches the launcher: the run
    checkpoints, with the batches other ranks hold queued again, exits 1,
    and a re-run resumes and finishes."""
    prefix, env = LAUNCHERS[launcher]
    proc = start(tmp_path, HELD, launcher=prefix, env=env)
    wait_for(lambda: _held_on_every_rank(tmp_path), what='items on every rank',
             proc=proc)
    held = {x for x, ranks in _started(tmp_path).items() if ranks - {0}}
    t0 = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15, err
    assert proc.returncode == 1, err
    assert err.count(f'{sig} received: writing a checkpoint') == 1, err
    assert err.count(f'stopped by {sig} after writing the checkpoint') == 1, err
    assert 'Traceback' not in err
    assert 'RESULT' not in out
    info = job_stream.checkpointInfo(str(tmp_path / 'run.chkpt'))
    assert info.queued.get('slow', 0) >= len(held), (info, held)
    wait_no_processes_in(tmp_path)
    _resume_and_check(tmp_path, prefix, held, env)


@pytest.mark.parametrize('victim', [0, 2], ids=['rank0', 'rank2'])
def test_kill9_rank_resumes(tmp_path, victim):
    """kill -9 of one rank under the job_stream command ends the run; the
    last checkpoint stays and ``job_stream -c`` again resumes from it
    without redoing all the work."""
    prefix = LAUNCHERS['job_stream'][0]
    env = {'INTERVAL': '0.05'}
    proc = start(tmp_path, HELD, launcher=prefix, env=env)
    wait_for(lambda: _held_on_every_rank(tmp_path) and len(
        list(tmp_path.glob('started.*.0'))) >= 20, what='progress', proc=proc)
    pid = int((tmp_path / f'pid.{victim}').read_text())
    held = {x for x, ranks in _started(tmp_path).items() if ranks - {0}}
    # the checkpoint taken last holds rank 0's progress
    wait_for(lambda: _checkpointed(tmp_path) >= 20, what='a checkpoint',
             proc=proc)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10, err
    assert proc.returncode != 0
    assert 'RESULT' not in out
    wait_no_processes_in(tmp_path)
    assert (tmp_path / 'run.chkpt').exists()   # the last checkpoint stays
    again = _resume_and_check(tmp_path, prefix, held, env)
    assert len(again) < 60, sorted(again)        # not all work redone


def test_job_stream_c_done_says_so_once_without_mpi(tmp_path):
    (tmp_path / 'run.chkpt.done').write_text('finished')
    (tmp_path / 'script.py').write_text('print("RAN")\n')
    proc = subprocess.run(
        [*job_stream_command('-c', 'run.chkpt', '--host', LOCAL_HOSTS),
         sys.executable, 'script.py'], capture_output=True, text=True,
        timeout=60, cwd=tmp_path, env=script_env(unbuffered=False))
    assert proc.returncode == 0
    assert 'RAN' not in proc.stdout
    assert proc.stderr.count('is complete') == 1, proc.stderr
    assert 'mpiexec' not in proc.stderr
