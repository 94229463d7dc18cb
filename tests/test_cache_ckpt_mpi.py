"""Cached stages under ``mpiexec -n 3`` (every rank's workers read and write
one cache folder) and under checkpoints (a killed run resumes).

Each call of the cached stage appends a line to ``calls.log`` (one
``O_APPEND`` write per call, so lines of concurrent writers do not mix).
"""
import os
import signal
import subprocess
import sys
import warnings


from conftest import kill_when, script_env
from job_stream.cache.store import MISSING, Store, hash_input, keys

MPI_SCRIPT = '''
import os, time
from job_stream.inline import Work, getRank

def log_call(x):
    fd = os.open('calls.log', os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f'{x} {os.getppid()}\\n'.encode())
    os.close(fd)

with open(f'rank-{getRank()}.pid', 'w') as f:
    f.write(str(os.getpid()))
# every input six times in a row: batches of one slow item go to different
# workers and ranks, which compute and write the same entry at once
work = [(x // 6, [x // 6] * 200) for x in range(180)]
w = Work(work, cache='cache', report=False, showProgress=False)

@w.job
def heavy(item):
    key, payload = item
    log_call(key)
    # the first calls wait (bounded) until workers of two ranks compute:
    # otherwise rank 0 may write every entry before other ranks' batches
    # arrive, and they would only read
    open(f'computing-{getRank()}', 'w').close()
    deadline = time.monotonic() + 20
    while (len([f for f in os.listdir('.') if f.startswith('computing-')]) < 2
           and time.monotonic() < deadline):
        time.sleep(0.01)
    time.sleep(0.01)
    return {'key': key, 'total': sum(payload), 'squares': [v * v for v in payload]}

@w.job(cache=False)
def summary(d):
    return (d['key'], d['total'], d['squares'][-1])

results = w.run()
if getRank() == 0:
    print('RESULTS', sorted(results))
'''


def calls(folder):
    try:
        text = (folder / 'calls.log').read_text()
    except FileNotFoundError:
        return []
    return [tuple(map(int, line.split())) for line in text.splitlines()]


def entries(root, stage):
    """{input hash: path} of the stage's entries under its one code key."""
    [key] = keys(str(root / stage))
    out = {}
    for dirpath, _, files in os.walk(key['path']):
        for name in files:
            if name != 'manifest.json':
                out[name] = os.path.join(dirpath, name)
    return key, out


def test_cache_under_mpi_second_run_calls_nothing(tmp_path, run_script):
    expect = sorted((x // 6, 200 * (x // 6), (x // 6) ** 2) for x in range(180))
    first = run_script(MPI_SCRIPT, launcher=['mpiexec', '-n', '3'], timeout=180)
    assert f'RESULTS {expect}' in first.stdout
    made = calls(tmp_path)
    assert {x for x, _ in made} == set(range(30))
    assert len(made) > 30, 'no entry was computed by two workers at once'
    rank_of = {int((tmp_path / f'rank-{r}.pid').read_text()): r for r in range(3)}
    assert len({rank_of[p] for _, p in made}) >= 2, 'one rank did all the work'

    (tmp_path / 'calls.log').unlink()
    second = run_script(MPI_SCRIPT, launcher=['mpiexec', '-n', '3'], timeout=180)
    assert f'RESULTS {expect}' in second.stdout
    assert calls(tmp_path) == []                   # every call was a hit
    for out in (first, second):
        assert 'CacheWarning' not in out.stderr, out.stderr

    key, found = entries(tmp_path / 'cache', 'heavy')
    assert not [p for p in found.values() if p.endswith('.tmp')]   # no leftovers
    store = Store(str(tmp_path / 'cache'), 'heavy', key['key'])
    assert len(found) == 30
    with warnings.catch_warnings():
        warnings.simplefilter('error')             # a corrupt entry would warn
        for x in range(30):
            value = store.get(hash_input((x, [x] * 200)))
            assert value is not MISSING
            assert value['total'] == 200 * x and value['squares'] == [x * x] * 200


CKPT_SCRIPT = '''
import os, time
from job_stream.inline import Work, Object

with Work(range(80), cache='cache', checkpointFile='run.chk',
          checkpointInterval=0.05, processes=2, report=False,
          showProgress=False) as w:
    @w.job
    def square(x):
        fd = os.open('calls.log', os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f'{x} 0\\n'.encode())
        os.close(fd)
        time.sleep(0.01)
        return x * x

    @w.reduce(store=lambda: Object(total=0, n=0), emit=lambda s: (s.total, s.n))
    def total(store, inputs, others):
        for x in inputs:
            store.total += x
            store.n += 1
        for t, n in others:
            store.total += t
            store.n += n

    @w.result
    def show(r):
        print('RESULT', r)
'''


def test_cached_pipeline_resumes_after_kill(tmp_path):
    """Killed twice after progress, re-run until done: the reduction counts
    every item exactly once; an item whose entry was in the cache at a kill
    is never called again (a hit, even if the checkpoint predates it)."""
    (tmp_path / 'script.py').write_text(CKPT_SCRIPT)
    kills = runs = 0
    hashed = {hash_input(x): x for x in range(80)}
    while True:
        runs += 1
        assert runs <= 5, 'the run does not finish'
        start = len(calls(tmp_path))
        proc = subprocess.Popen([sys.executable, 'script.py'], cwd=tmp_path,
                                env=script_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        if kills < 2:
            kills += kill_when(proc, lambda: (
                (tmp_path / 'run.chk').exists()
                and len(calls(tmp_path)) >= start + 15))
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        # what the cache held when the run died, and the calls so far
        _, found = entries(tmp_path / 'cache', 'square')
        cached = {hashed[h] for h in found if h in hashed}
        before = calls(tmp_path)
        if runs == 1:
            cached_first, calls_first = cached, before
    assert kills == 2
    assert out.splitlines() == [f'RESULT {(sum(x * x for x in range(80)), 80)}']
    made = [x for x, _ in calls(tmp_path)]
    assert set(made) == set(range(80))
    for x in cached_first:       # in the cache at the first kill: never again
        assert made.count(x) == [c for c, _ in calls_first].count(x) == 1, x
    assert len(cached_first) >= 10
    assert 'CacheWarning' not in err
