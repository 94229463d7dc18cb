"""cluf under checkpoints: a direct run killed partway resumes with `-c`, a
dispatch's subjob stopped at its walltime resumes within its bins.

The target records every call as a line of ``out/<argument>``.  On argument
``KILL_AT`` (unless the file ``killed`` exists) it waits until the run has
written two more checkpoints, so that work finished before it is in a
checkpoint, then kills its own process group (``KILL_SIGNAL``): SIGKILL as a
lost node, SIGTERM as SLURM at a walltime (SLURM signals every process of
the step, workers included).

What the design guarantees (DESIGN.md, "Front ends under checkpoints and
MPI"): every argument runs at least once; an argument whose call was applied
before the last checkpoint is not called again; the ones after it (queued or
in flight when the checkpoint was taken) may run twice.  The tests read the
checkpoint the resumed run starts from to know which arguments are which.
"""
import os
import signal
import subprocess
import sys

from cluf_helpers import calls, cluf, write_script
from conftest import script_env
from job_stream.checkpoint import load, read_header

KILLING_TARGET = '''
import signal, time
from job_stream import checkpointInfo

_record = target
KILL_AT = int(os.environ['KILL_AT'])
CKPT = os.environ['CKPT']

def _checkpoints_written(count):
    """Wait (bounded) until CKPT was replaced ``count`` times."""
    seen, deadline = os.stat(CKPT).st_ino, time.monotonic() + 60
    while count and time.monotonic() < deadline:
        ino = os.stat(CKPT).st_ino
        if ino != seen:
            seen, count = ino, count - 1
        time.sleep(0.005)
    assert not count, 'no checkpoint written'

def target(a, b=0):
    _record(a, b)
    if a in FAILING:
        raise ValueError(f'bad {a}')
    time.sleep(0.01)
    if a == KILL_AT and not os.path.exists('killed'):
        _checkpoints_written(2)
        open('killed', 'w').close()
        os.killpg(os.getpgrp(), int(os.environ['KILL_SIGNAL']))
'''


def killing_script(tmp_path, n, failing=()):
    return write_script(tmp_path, n=n,
                        code=KILLING_TARGET + f'FAILING = {set(failing)!r}\n')


CLUF = [sys.executable, '-m', 'job_stream.cluf']


def run_own_group(command, cwd, env, expect):
    """Run ``command`` in its own process group (the target kills the group,
    as SLURM signals a whole step); return its stderr."""
    proc = subprocess.Popen(
        [*map(str, command)], cwd=cwd, env=script_env({'CLUFRC': '', **env}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == expect, err
    return err


def checkpointed(path, arguments):
    """Arguments completed in the checkpoint at ``path``: read before it was
    taken and neither queued nor in flight.  ``arguments`` lists the run's
    arguments in the order it reads them (a bin's, for a subjob)."""
    header, _ = read_header(str(path))
    _, parts = load(str(path), header['fingerprint'])
    pending = {work[0] for chunks in parts['queue'].values()
               for chunk in chunks for work in chunk[1]}   # (position, bin, value)
    return set(arguments[:parts['input']['input_position']]) - pending


def counts(folder):
    return {a: len(c) for a, c in calls(folder).items()}


def check_resume(before, after, done_at_checkpoint, n):
    """The guarantees, given the calls before and after the resume."""
    assert sorted(after) == list(range(n))                 # every argument ran
    rerun = {a for a in after if after[a] > before.get(a, 0)}
    # nothing completed in the checkpoint ran again...
    assert not rerun & done_at_checkpoint, sorted(rerun & done_at_checkpoint)
    assert all(after[a] == 1 for a in done_at_checkpoint)
    # ...and only work after it ran twice (at least once: no more than twice)
    assert {a for a in after if after[a] > 1} <= set(range(n)) - done_at_checkpoint
    assert max(after.values()) <= 2


def test_direct_run_killed_resumes_without_rerunning_checkpointed_arguments(tmp_path):
    n, kill_at = 60, 40
    script = killing_script(tmp_path, n)
    env = {'KILL_AT': str(kill_at), 'CKPT': 'run.chk',
           'KILL_SIGNAL': str(int(signal.SIGKILL))}
    command = [script, '-c', 'run.chk', '--checkpoint-interval', '0.05', '-p', 2,
               '--no-report']
    run_own_group(CLUF + command, tmp_path, env, expect=-signal.SIGKILL)
    assert (tmp_path / 'killed').exists()
    done_at_checkpoint = checkpointed(tmp_path / 'run.chk', range(n))
    before = counts(tmp_path)
    assert kill_at not in done_at_checkpoint      # it was running at the kill
    assert len(done_at_checkpoint) >= 10, done_at_checkpoint

    proc = cluf(*command, cwd=tmp_path, env=env, check=0)      # the same command
    assert 'Resuming from the checkpoint' in proc.stderr
    after = counts(tmp_path)
    check_resume(before, after, done_at_checkpoint, n)
    assert after[kill_at] == 2                    # in flight: called again
    assert (tmp_path / 'run.chk.done').exists()


def test_keep_going_failures_survive_a_resume(tmp_path):
    """Failures recorded before the kill are in the checkpoint (the run's
    results), so the final summary and exit status still report them."""
    n, kill_at = 40, 30
    script = killing_script(tmp_path, n, failing=(1, 3))
    env = {'KILL_AT': str(kill_at), 'CKPT': 'run.chk',
           'KILL_SIGNAL': str(int(signal.SIGKILL))}
    command = [script, '-c', 'run.chk', '--checkpoint-interval', '0.05', '-p', 2,
               '--keep-going', '--no-report']
    err = run_own_group(CLUF + command, tmp_path, env, expect=-signal.SIGKILL)
    assert 'cluf: argument #1 (bin 0) failed: ValueError: bad 1' in err
    done_at_checkpoint = checkpointed(tmp_path / 'run.chk', range(n))
    assert {1, 3} <= done_at_checkpoint           # their failures are in it
    proc = cluf(*command, cwd=tmp_path, env=env, check=1)
    after = counts(tmp_path)
    assert after[1] == after[3] == 1              # not run again
    assert 'cluf: 2 of 40 arguments failed' in proc.stderr
    assert proc.stderr.count('--- argument #1 (bin 0): (1, 10)') == 1
    assert proc.stderr.count('--- argument #3 (bin 0): (3, 30)') == 1
    assert 'ValueError: bad 3' in proc.stderr


def test_dispatch_subjob_sigterm_then_resubmit(tmp_path):
    """Subjob 1 of 2 is SIGTERM'd (its whole process group, as SLURM does at
    the walltime) after checkpoints: it writes a checkpoint, marks its bin
    failed and exits 1.  Dispatching again leaves out the finished subjob;
    running the rewritten script of subjob 1 resumes inside its bin."""
    n, kill_at = 60, 41                           # bin 1 holds odd arguments
    script = killing_script(tmp_path, n)
    jobs = tmp_path / 'jobs'
    ckpt = jobs / 'checkpoints' / 'subjob-1.chk'
    env = {'KILL_AT': str(kill_at), 'CKPT': str(ckpt),
           'KILL_SIGNAL': str(int(signal.SIGTERM))}
    dispatch = [script, '-n', 2, '-j', jobs, '-p', 2, '--scheduler', 'slurm',
                '--checkpoint-interval', '0.05', '--no-report']
    proc = cluf(*dispatch, cwd=tmp_path, env=env, check=0)
    assert 'wrote 2 slurm scripts' in proc.stderr
    text = (jobs / 'subjob-1.sh').read_text()
    assert f'--checkpoint {ckpt}' in text and '--checkpoint-interval 0.05' in text
    bash = lambda i: ['bash', str(jobs / f'subjob-{i}.sh')]
    run = subprocess.run(bash(0), capture_output=True, text=True, timeout=120,
                         env=script_env(env), stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    # bash, signalled too, dies of it; cluf itself checkpoints and exits 1
    err = run_own_group(bash(1), tmp_path, env, expect=-signal.SIGTERM)
    assert 'stopped by SIGTERM after writing the checkpoint' in err
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'done         1  bins 0' in status and 'failed       1  bins 1' in status
    done_at_checkpoint = checkpointed(ckpt, range(1, n, 2))
    assert len(done_at_checkpoint) >= 5 and kill_at not in done_at_checkpoint
    before = counts(tmp_path)

    proc = cluf(*dispatch, cwd=tmp_path, env=env, check=0)    # resubmit
    assert '1 of 2 bins are already done' in proc.stderr
    run = subprocess.run(bash(1), capture_output=True, text=True, timeout=120,
                         env=script_env(env), stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert 'Resuming from the checkpoint' in run.stderr
    after = counts(tmp_path)
    check_resume(before, after, done_at_checkpoint, n)
    assert all(after[a] == 1 for a in range(0, n, 2))        # bin 0 never reran
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'done         2  bins 0-1' in status
    # --fresh forgets the finished bins and the checkpoints (and .done markers)
    assert (jobs / 'checkpoints' / 'subjob-0.chk.done').exists()
    cluf(*dispatch, '--fresh', cwd=tmp_path, env=env, check=0)
    assert not list((jobs / 'checkpoints').iterdir())
    run = subprocess.run(bash(0), capture_output=True, text=True, timeout=120,
                         env=script_env(env), stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert all(after[a] + 1 == n for a, n in counts(tmp_path).items() if a % 2 == 0)


def test_failed_bins_rerun_despite_done_marker(tmp_path):
    """A subjob that finished with failing arguments (--keep-going) leaves its
    checkpoint's .done marker; the jobs folder says the bin is not done, so
    running it again reruns the bin instead of refusing."""
    script = write_script(tmp_path, n=6, code='''
        _record = target
        def target(a, b=0):
            _record(a, b)
            if a == 3 and not os.path.exists('fixed'):
                raise ValueError('not yet')
    ''')
    args = [script, '-b', '0-1/2', '-j', 'jobs', '-c', 'jobs/bins.chk',
            '--keep-going', '-p', 1, '--no-report']
    (tmp_path / 'jobs').mkdir()
    cluf(*args, cwd=tmp_path, check=1)
    assert (tmp_path / 'jobs/bins.chk.done').exists()
    (tmp_path / 'fixed').write_text('')
    proc = cluf(*args, cwd=tmp_path, check=0)
    assert 'bins 0/2 already done' in proc.stderr
    assert 'removing' in proc.stderr and 'bins.chk.done' in proc.stderr
    # bin 1 (1, 3, 5) ran again, bin 0 did not
    assert counts(tmp_path) == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2}


def test_bad_checkpoint_is_one_sentence(tmp_path):
    script = write_script(tmp_path, n=3)
    (tmp_path / 'run.chk').write_text('not a checkpoint')
    proc = cluf(script, '-c', 'run.chk', '-p', 1, cwd=tmp_path, check=2)
    assert proc.stderr.startswith('Using run.chk as checkpoint file\ncluf: error: '
                                  'The checkpoint file run.chk is not a job_stream '
                                  'checkpoint'), proc.stderr
    assert 'Traceback' not in proc.stderr and not calls(tmp_path)
    proc = cluf(script, '-c', 'nowhere/run.chk', '-p', 1, cwd=tmp_path, check=2)
    assert 'folder containing the requested checkpoint file does not exist' in proc.stderr
    (tmp_path / 'run.chk').unlink()
    cluf(script, '-c', 'run.chk', '-p', 1, '--no-report', cwd=tmp_path, check=0)
    proc = cluf(script, '-c', 'run.chk', '-p', 1, cwd=tmp_path, check=2)
    assert 'cluf: error: This run already finished' in proc.stderr
    assert counts(tmp_path) == {0: 1, 1: 1, 2: 1}
