"""Runs under real ``mpiexec`` on this machine: same results as the local
executor, rank roles, failures, load balance, shared datasets."""
import re
import subprocess
import sys
import time

import pytest

MPIEXEC = ['mpiexec', '-n']

INLINE = '''
import job_stream
from job_stream.inline import Work, Multiple, Object, getRank, getCpuCount

with Work(range(40)) as w:
    @w.init
    def extra():
        print('init ran on rank', getRank())
        return Multiple([100, 101])

    @w.job
    def square(x):
        return x * x

    @w.frame(store=lambda: Object(n=0, total=0))
    def loop(store, first):
        if store.n < 3:
            store.n += 1
            return first
        return None

    @w.job
    def plus_one(x):
        return x + 1

    @w.frameEnd
    def back(store, nxt):
        store.total += nxt

    @w.reduce(store=lambda: Object(total=0), emit=lambda s: s.total)
    def total(store, inputs, others):
        store.total += sum(s.total for s in inputs) + sum(others)

    @w.result
    def show(r):
        print('RESULT', r, 'on rank', getRank())

print('map', job_stream.map(lambda a, b: a * b, range(30), range(30), report=False))
'''

CLASSES = '''
from job_stream import common

class AddOne(common.Job):
    def handleWork(self, work):
        self.emit(work + self.config.get('step', 1))

class Sum(common.Reducer):
    def handleInit(self, store):
        store.total = 0
    def handleAdd(self, store, work):
        store.total += work
    def handleJoin(self, store, other):
        store.total += other.total
    def handleDone(self, store):
        self.emit(store.total)

common.work = list(range(50))
common.run({'reducer': Sum, 'jobs': [{'type': AddOne, 'step': 10}]},
           handleResult=lambda r: print('RESULT', r))
'''


def _lines(text, prefix):
    return sorted(line for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.parametrize('code', [INLINE, CLASSES], ids=['inline', 'classes'])
@pytest.mark.parametrize('n', [1, 2, 3])
def test_same_results_as_local(run_script, code, n):
    local = run_script(code)
    mpi = run_script(code, launcher=[*MPIEXEC, str(n)], timeout=180)
    assert _lines(mpi.stdout, 'RESULT') == _lines(local.stdout, 'RESULT')
    assert _lines(local.stdout, 'RESULT')
    assert _lines(mpi.stdout, 'map [') == _lines(local.stdout, 'map [')
    # results, finish and init only on rank 0; None elsewhere
    assert 'on rank 1' not in mpi.stdout and 'on rank 2' not in mpi.stdout
    assert mpi.stdout.count('init ran on rank') == (1 if code is INLINE else 0)
    if n > 1:
        if code is INLINE:
            assert mpi.stdout.count('map None') == n - 1
        # the report has one line per rank plus the cluster line
        report = [l for l in mpi.stderr.splitlines()
                  if re.match(r'^(\d+_\S+|C) \d+% user', l)]
        assert len(report) == n + 1, mpi.stderr


def test_rank_functions_and_every_rank_works(run_script):
    code = '''
    import os, time
    from job_stream.inline import Work, getRank, getCpuCount, getHostCpuCount
    print('RANK', getRank(), getCpuCount(), getHostCpuCount(), flush=True)
    def job(x):
        time.sleep(0.02)
        return str(getRank())   # in a worker process of that rank
    w = Work(range(120), processes=1)
    w.job(job)
    out = w.run()
    if getRank() == 0:
        print('BY', sorted((r, out.count(r)) for r in set(out)))
    else:
        print('NONE', out)
    '''
    p = run_script(code, launcher=[*MPIEXEC, '3'], timeout=180)
    ranks = _lines(p.stdout, 'RANK')
    host = int(ranks[0].split()[3])
    assert [l.split()[1] for l in ranks] == ['0', '1', '2']
    assert all(int(l.split()[2]) == 3 * host for l in ranks)
    assert p.stdout.count('NONE None') == 2
    by = dict(eval(_lines(p.stdout, 'BY')[0][3:]))
    assert set(by) == {'0', '1', '2'} and sum(by.values()) == 120


def test_no_mpi_import_without_launcher(run_script):
    code = '''
    import sys, job_stream
    print(job_stream.map(abs, [-1], report=False), job_stream.getRank())
    print('mpi4py' in sys.modules)
    '''
    p = run_script(code)
    assert p.stdout.split('\n')[:2] == ['[1] 0', 'False']


def test_user_error_under_mpi(run_script):
    code = '''
    from job_stream.inline import Work, getRank
    w = Work(range(50))
    @w.job
    def parse(x):
        if x == 37:
            raise ValueError('bad item 37')
        return x
    try:
        w.run()
    except ValueError as e:
        print('CAUGHT on rank', getRank(), str(e))
        raise
    '''
    t0 = time.monotonic()
    p = run_script(code, launcher=[*MPIEXEC, '2'], check=False, timeout=120)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 60
    assert 'bad item 37' in p.stderr and 'parse' in p.stderr
    assert 'While processing work with target: parse' in p.stderr
    assert 'CAUGHT on rank 0 bad item 37' in p.stdout


def test_worker_killed_inside_rank(run_script, tmp_path):
    code = f'''
    import os, signal
    from job_stream.inline import Work
    marker = {str(tmp_path / 'killed')!r}
    w = Work(range(60))
    @w.job
    def maybe_die(x):
        if x == 50:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        return x
    out = w.run()
    if out is not None:
        print('SUM', sum(out))
    '''
    p = run_script(code, launcher=[*MPIEXEC, '2'], timeout=120)
    assert 'SUM 1770' in p.stdout
    assert (tmp_path / 'killed').exists()


def test_pipeline_mismatch_refused(run_script):
    code = '''
    from job_stream.inline import Work, getRank
    w = Work(range(10))
    w.job(abs)
    if getRank() == 1:
        w.job(abs)
    w.run()
    '''
    p = run_script(code, launcher=[*MPIEXEC, '2'], check=False, timeout=120)
    assert p.returncode != 0
    assert 'built a different pipeline' in p.stderr


RANK_LOSS = '''
import os, signal, threading, time
from job_stream.inline import Work, getRank
VICTIM = int(os.environ['VICTIM'])
if getRank() == VICTIM:
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
w = Work(range(100000), processes=1)
w.job(lambda x: time.sleep(0.05))
w.run()
print('FINISHED')
'''


@pytest.mark.parametrize('victim', [1, 0], ids=['rank1', 'primary'])
def test_rank_killed_ends_run_under_command(run_script, tmp_path, victim):
    """Under the job_stream command every rank ends within 10 s."""
    (tmp_path / 'loss.py').write_text(RANK_LOSS)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, '-m', 'job_stream', '--host', 'localhost,127.0.0.1',
         '--', sys.executable, str(tmp_path / 'loss.py')],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=_env({'VICTIM': str(victim)}))
    took = time.monotonic() - t0
    assert p.returncode != 0, p.stderr
    assert 'FINISHED' not in p.stdout
    assert took < 2.0 + 10 + 5, (took, p.stderr)  # startup + bound + slack
    # nothing of the run is left behind
    left = subprocess.run(['pgrep', '-f', str(tmp_path / 'loss.py')],
                          capture_output=True, text=True).stdout.split()
    assert not left, left


def _env(extra):
    from conftest import script_env
    return script_env(extra, unbuffered=False)


def test_load_balance_slow_rank(run_script):
    """A rank whose jobs take 3x longer gets about a quarter of the work and
    the makespan stays near the ideal one."""
    code = '''
    import os, time
    from job_stream.inline import Work, getRank
    os.environ['SLOW'] = '3' if getRank() == 1 else '1'
    os.environ['TEST_RANK'] = str(getRank())
    def job(x):
        time.sleep(0.03 * float(os.environ['SLOW']))
        return os.environ['TEST_RANK']
    warm = Work(range(4), processes=1, report=False)   # start the pools
    warm.job(abs)
    warm.run()
    w = Work(range(240), processes=1, report=False)
    w.job(job)
    t0 = time.perf_counter()
    out = w.run()
    if getRank() == 0:
        print('MAKESPAN', time.perf_counter() - t0, out.count('1'))
    '''
    p = run_script(code, launcher=[*MPIEXEC, '2'], timeout=180)
    makespan, slow_items = _lines(p.stdout, 'MAKESPAN')[0].split()[1:]
    # rates: rank 0 1/0.03, rank 1 1/0.09 -> rank 1 does 1/4 of the items
    ideal = 240 / (1 / 0.03 + 1 / 0.09)
    print(f'makespan {float(makespan):.2f}s ideal {ideal:.2f}s, slow rank '
          f'{slow_items}/240 items')
    assert 40 <= int(slow_items) <= 80
    assert float(makespan) < ideal * 1.10


SHARED = '''
import job_stream
from job_stream.executors.mpi import wire_stats
from job_stream.inline import Work, Object, getRank
import random
random.seed(getRank())   # every rank makes a different list; rank 0's is used
DATA = [random.random() for _ in range(100000)]
MODE = {mode!r}
data = job_stream.Shared(DATA) if MODE == 'shared' else DATA

def score(p):
    d = data.value if MODE == 'shared' else data
    return p * d[0] + len(d)

total = 0
for step in range(4):
    total += sum(job_stream.map(score, range(20), report=False) or [])

# the frame shape: one run, the dataset travels inside the work
with Work([job_stream.Shared(DATA)], report=False) as w:
    @w.frame(store=lambda: Object(n=0, acc=0.0))
    def iterate(store, first):
        if store.n == 4:
            return None
        store.n += 1
        return job_stream.Multiple([(i, first) for i in range(10)])
    @w.job
    def use(item):
        i, ref = item
        return i * ref.value[0]
    @w.frameEnd
    def gather(store, value):
        store.acc += value
    @w.result
    def done(store):
        print('FRAME', round(store.acc, 6))
if getRank() == 0:
    print('TOTAL', round(total, 6), 'EXPECT', round(4 * sum(p * DATA[0] + len(DATA) for p in range(20)), 6))
    print('FRAME_EXPECT', round(4 * sum(i * DATA[0] for i in range(10)), 6))
    print('WIRE', wire_stats())
'''


def test_shared_dataset_sent_once_per_host(run_script):
    import ast
    out = {}
    for mode in ('shared', 'closure'):
        p = run_script(SHARED.format(mode=mode), launcher=[*MPIEXEC, '3'],
                       timeout=240)
        total, expect = _lines(p.stdout, 'TOTAL')[0].split()[1::2]
        assert total == expect
        wire = ast.literal_eval(_lines(p.stdout, 'WIRE')[0][5:])
        out[mode] = wire
        if mode == 'shared':
            assert _lines(p.stdout, 'FRAME ')[0].split()[1] == \
                _lines(p.stdout, 'FRAME_EXPECT')[0].split()[1]
    size = len(__import__('pickle').dumps([0.5] * 100000, 5))
    shared, closure = out['shared'], out['closure']
    print('bytes sent: shared', shared, 'closure', closure)
    # two other ranks, each gets the dataset once (the map runs and the
    # frame use the same one)
    assert shared['shared_sends'] == 2
    assert shared['shared_bytes'] < 2 * size * 1.01
    assert shared['bytes_sent'] < 2 * size * 1.01 + 200_000
    # the closure ships it with the code of every run to every rank
    assert closure['bytes_sent'] > 4 * 2 * size




def test_run_inside_a_job_is_local_on_every_rank(run_script):
    """A job that itself calls job_stream.map runs it in its worker process,
    on every rank (workers know their rank but have no MPI of their own)."""
    p = run_script('''
    import time
    import job_stream
    from job_stream.inline import Work, getRank
    def job(x):
        time.sleep(0.01)
        inner = job_stream.map(abs, [-1, -2], report=False,
                               useMultiprocessing=False)
        return getRank(), x + sum(inner)
    w = Work(range(60), processes=1, report=False)
    w.job(job)
    out = w.run()
    if out is not None:
        print('RANKS', sorted(set(r for r, _ in out)),
              'SUM', sum(v for _, v in out))
    ''', launcher=[*MPIEXEC, '2'], timeout=120)
    assert f'RANKS [0, 1] SUM {sum(range(60)) + 60 * 3}' in p.stdout, p.stdout
