"""What the checkpoint tests share: the pipelines they run, starting a script
as a real process (alone, under ``mpiexec`` or under the ``job_stream``
command), bounded waits on observable state, and the kill -9 loop.

No helper sleeps in place of synchronisation: every wait polls something
the run makes visible (a file, an inode, an exit) and has a deadline.
"""
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time

from conftest import script_env

MPIEXEC3 = ('mpiexec', '-n', '3')
# Three ranks on this machine under the job_stream command (one per name).
LOCAL_HOSTS = f'localhost,127.0.0.1,{socket.gethostname()}'

# A pipeline with an init, jobs in workers, a nested frame and a global
# reducer.  argv: checkpoint path ('-' for none), then the name of a hook job
# of job_stream.inline or '-'.  Env: N (input size), OPTS (more Work options).
PIPELINE = '''
import os, sys
from job_stream import inline
from job_stream.inline import Work, Object, Multiple
path, hook = sys.argv[1], sys.argv[2]
N = int(os.environ.get('N', '12'))
opts = dict(checkpointFile=path) if path != '-' else {}
opts.update(eval(os.environ.get('OPTS', '{}')))
with Work(range(N), processes=int(os.environ.get('PROCESSES', '2')),
          report=False, **opts) as w:
    @w.init
    def init():
        with open('init.log', 'a') as f:
            f.write('init\\n')
        return Multiple([100, 200])
    @w.job
    def triple(x):
        return 3 * x
    if hook != '-':
        w.job(getattr(inline, hook))
    @w.frame(store=lambda: Object(n=0, acc=0))
    def loop(store, first):
        if store.n >= 3:
            return None
        return first + store.n
    @w.job
    def square(x):
        return x * x
    @w.frameEnd
    def end(store, nxt):
        store.n += 1
        store.acc += nxt
    @w.reduce(store=lambda: Object(total=0, count=0),
              emit=lambda s: (s.total, s.count))
    def total(store, inputs, others):
        for s in inputs:
            store.total += s.acc
            store.count += 1
    @w.result
    def show(r):
        print('RESULT', r, flush=True)
'''


def expected(n=12):
    """PIPELINE's result: (sum over items of the frame's values, item count)."""
    items = [100, 200] + list(range(n))
    return (sum((3 * x + k) ** 2 for x in items for k in range(3)), len(items))


def result_of(proc):
    """The one ``RESULT`` line's value in a finished run's stdout."""
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    assert len(lines) == 1, proc.stdout
    return eval(lines[0][len('RESULT '):])


def rerun_until_done(run_once, limit=60):
    """Call ``run_once()`` (returns a CompletedProcess) until it exits 0;
    every failed run must be a checkpoint-and-exit.  Returns (runs, last)."""
    for runs in range(1, limit + 1):
        proc = run_once()
        if proc.returncode == 0:
            return runs, proc
        assert proc.returncode == 1, proc.stderr
        assert 're-running the same command resumes' in proc.stderr, proc.stderr
    raise AssertionError(f'not done after {limit} runs:\n{proc.stderr}')


def start(cwd, code, *args, env=None, launcher=(), text=True):
    """Write ``code`` to ``cwd/script.py`` and start it (under ``launcher``,
    e.g. MPIEXEC3); stdout and stderr are pipes."""
    path = cwd / 'script.py'
    path.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [*launcher, sys.executable, str(path), *map(str, args)], cwd=cwd,
        env=script_env(env, unbuffered=not launcher), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=text, stdin=subprocess.DEVNULL)


def job_stream_command(*options):
    """The launcher prefix for ``job_stream OPTIONS -- python script.py``."""
    return (sys.executable, '-m', 'job_stream', *options, '--')


def wait_for(condition, timeout=60, what='condition', proc=None):
    """Poll ``condition()`` until true; fail after ``timeout`` seconds, or at
    once if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f'the run ended (status {proc.returncode}) '
                                 f'before {what}:\n{out}\n{err}')
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.005)


def inode(path):
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def wait_new_checkpoint(path, old_ino, proc, timeout=60):
    """Until the checkpoint file was replaced; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        ino = inode(path)
        if ino is not None and ino != old_ino:
            return True
        time.sleep(0.005)
    raise AssertionError('no new checkpoint within the timeout')


def processes_in(folder):
    """PIDs of live processes whose working directory is ``folder``."""
    found = []
    for pid in os.listdir('/proc'):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if os.readlink(f'/proc/{pid}/cwd') == str(folder):
                    with open(f'/proc/{pid}/stat') as f:
                        if f.read().rpartition(')')[2].split()[0] != 'Z':
                            found.append(int(pid))
            except OSError:
                pass
    return found


def wait_no_processes_in(folder, timeout=15):
    """Every process of the run (ranks, workers) is gone within ``timeout``."""
    deadline = time.monotonic() + timeout
    while processes_in(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_in(folder), processes_in(folder)


# -- the kill -9 loop -------------------------------------------------------------
# Jobs in workers, a nested frame (a loop per item), and in ``reduce`` mode a
# global reducer; in ``stream`` mode every item's result goes to @w.result,
# which appends it to ``delivered``.  Each rank writes its PID to pid.RANK.
KILL_SCRIPT = '''
import os, sys, time
from job_stream.inline import Work, Object, Multiple, getRank
n, mode, nap, procs = (int(sys.argv[1]), sys.argv[2], float(sys.argv[3]),
                       int(sys.argv[4]))
with open(f'pid.{getRank()}.new', 'w') as f:
    f.write(str(os.getpid()))
os.replace(f'pid.{getRank()}.new', f'pid.{getRank()}')
with Work(range(n), processes=procs, report=False, checkpointFile='run.chkpt',
          checkpointInterval=0.05) as w:
    @w.init
    def init():
        with open('init.log', 'a') as f:
            f.write('init\\n')
        return Multiple([1000, 2000])
    @w.job
    def triple(x):
        time.sleep(nap)
        return 3 * x
    @w.frame(store=lambda: Object(x=None, n=0, acc=0),
             emit=lambda s: (s.x, s.acc))
    def loop(store, first):
        store.x = first
        if store.n >= 3:
            return None
        return first + store.n
    @w.job
    def square(x):
        time.sleep(nap)
        return x * x
    @w.frameEnd
    def end(store, nxt):
        store.n += 1
        store.acc += nxt
    if mode == 'reduce':
        @w.reduce(store=lambda: Object(total=0, count=0),
                  emit=lambda s: (s.total, s.count))
        def total(store, inputs, others):
            for x, acc in inputs:
                store.total += acc
                store.count += 1
    @w.result
    def show(r):
        with open('delivered', 'a') as f:
            f.write(repr(r) + '\\n')
'''


def per_item(n):
    """KILL_SCRIPT's result per item (stream mode)."""
    return {y: sum((y + k) ** 2 for k in range(3))
            for y in (3 * x for x in [1000, 2000] + list(range(n)))}


def kill_loop(tmp_path, mode, n, nap, kills, seed, launcher=(), processes=2,
              victims=(0,)):
    """Run KILL_SCRIPT, kill -9 one of its ranks (chosen from ``victims``, in
    turn, then at random) at a random moment after each new checkpoint, and
    re-run until a run finishes.  Returns (kills done, delivered results)."""
    rng = random.Random(seed)
    chkpt = tmp_path / 'run.chkpt'
    done_kills = runs = 0
    while True:
        runs += 1
        assert runs < kills + 30, 'the run does not finish'
        for old in tmp_path.glob('pid.*'):
            old.unlink()
        old = inode(chkpt)
        proc = start(tmp_path, KILL_SCRIPT, n, mode, nap, processes,
                     launcher=launcher)
        killed = None
        if done_kills < kills and wait_new_checkpoint(chkpt, old, proc):
            victim = (victims[done_kills] if done_kills < len(victims)
                      else rng.choice(victims))
            pid_file = tmp_path / f'pid.{victim}'
            wait_for(lambda: pid_file.exists() or proc.poll() is not None,
                     what=f'rank {victim} to start')
            # a random moment after this run made progress
            deadline = time.monotonic() + rng.uniform(0, 0.3)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                done_kills += 1
                killed = victim
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert killed is not None, (proc.returncode, out, err)
        if launcher:   # mpiexec reports the killed rank and ends the others
            assert proc.returncode != 0 and 'signal 9' in out + err, (out, err)
        else:
            assert proc.returncode == -signal.SIGKILL, err
        wait_no_processes_in(tmp_path)   # no rank or worker is left behind
    assert (tmp_path / 'run.chkpt.done').exists()
    assert not chkpt.exists()
    assert (tmp_path / 'init.log').read_text() == 'init\n'   # init ran once
    lines = (tmp_path / 'delivered').read_text().splitlines()
    return done_kills, [eval(l) for l in lines]


def kill_loop_test(tmp_path, mode, n, kills, seed, **options):
    """A kill loop with ``kills`` kills (``options`` as for :func:`kill_loop`),
    then the checks: the final result equals the uninterrupted run's,
    nothing is lost, and at most one result is delivered again per kill
    (the handler that was running)."""
    done, delivered = kill_loop(tmp_path, mode, n, 0.01, kills, seed, **options)
    assert done == kills
    expect = per_item(n)
    if mode == 'reduce':
        assert set(delivered) == {(sum(expect.values()), len(expect))}
        assert len(delivered) <= 2
    else:
        assert dict(delivered) == expect               # nothing lost, all right
        assert len(delivered) - len(expect) <= kills   # at most one per kill
