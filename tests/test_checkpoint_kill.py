"""Kill -9 the primary at random moments and resume until done.

The pipeline has jobs in workers, a nested frame (a loop per item) and, in
``reduce`` mode, a global reducer; in ``stream`` mode every item's result
goes to ``@w.result``, which appends it to a file.  The final result must
equal the uninterrupted run's, nothing may be lost, and ``@w.result`` may see
a result again at most once per kill (the handler that was running).
"""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import script_env

SCRIPT = '''
import sys, time
from job_stream.inline import Work, Object, Multiple
n, mode, nap = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
with Work(range(n), processes=2, report=False, checkpointFile='run.chkpt',
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
    return {y: sum((y + k) ** 2 for k in range(3))
            for y in (3 * x for x in [1000, 2000] + list(range(n)))}


def wait_new_checkpoint(path, old_ino, proc, timeout=60):
    """Until the checkpoint file was replaced (or the run ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if os.stat(path).st_ino != old_ino:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError('no new checkpoint within the timeout')


def kill_loop(tmp_path, mode, n, nap, kills, seed):
    rng = random.Random(seed)
    script = tmp_path / 'script.py'
    script.write_text(SCRIPT)
    chkpt = tmp_path / 'run.chkpt'
    done_kills = runs = 0
    while True:
        runs += 1
        assert runs < kills + 30, 'the run does not finish'
        try:
            old = os.stat(chkpt).st_ino
        except FileNotFoundError:
            old = None
        proc = subprocess.Popen(
            [sys.executable, str(script), str(n), mode, str(nap)],
            cwd=tmp_path, env=script_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if done_kills < kills and wait_new_checkpoint(chkpt, old, proc):
            # a random moment after this run made progress
            deadline = time.monotonic() + rng.uniform(0, 0.3)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                done_kills += 1
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()
    assert (tmp_path / 'run.chkpt.done').exists()
    assert not chkpt.exists()
    assert (tmp_path / 'init.log').read_text() == 'init\n'   # init ran once
    lines = (tmp_path / 'delivered').read_text().splitlines()
    return done_kills, [eval(l) for l in lines]


def check(mode, n, kills, delivered):
    expect = per_item(n)
    if mode == 'reduce':
        assert set(delivered) == {(sum(expect.values()), len(expect))}
        assert len(delivered) <= 2
    else:
        assert dict(delivered) == expect               # nothing lost, all right
        assert len(delivered) - len(expect) <= kills   # at most one per kill


@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_fast(tmp_path, mode):
    kills, delivered = kill_loop(tmp_path, mode, n=150, nap=0.01, kills=3,
                                 seed=mode)
    assert kills == 3
    check(mode, 150, kills, delivered)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['reduce', 'stream'])
def test_kill9_loop_many(tmp_path, mode):
    kills, delivered = kill_loop(tmp_path, mode, n=600, nap=0.01, kills=20,
                                 seed=mode + '-many')
    assert kills == 20
    check(mode, 600, kills, delivered)
