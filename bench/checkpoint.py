"""Checkpoint benchmark: sizes, times, and overhead on a running pipeline.

    python bench/checkpoint.py            # full: 5-minute runs (about 20 min)
    python bench/checkpoint.py --quick    # scaled down (about 1 min idle)

Measures:

1. size and time (pickle, write+fsync+rename, read+check+unpickle) of a
   checkpoint holding 100,000 queued work items;
2. the same for one reducer store of 100 MB (a numpy array if numpy is
   installed, else bytes);
3. the overhead of checkpointing a run that holds a 100 MB store: a run of
   CPU-bound jobs lasting DURATION (5 min; --quick: 5 s on an idle
   machine) without checkpoints, then with checkpointInterval 60 s and 10 s
   (--quick: 2 s and 0.5 s).  Goal: < 2% at 60 s.  Workers keep running while a checkpoint is
   written (the write is in a background thread); the primary pauses
   dispatch while it pickles the state.

Prints one line per measurement; numbers depend on the disk and the load.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

from job_stream import checkpoint as ck  # noqa: E402
from job_stream.pipeline import JobStage, Pipeline  # noqa: E402
from job_stream.processor import Processor  # noqa: E402
from job_stream.objects import Object  # noqa: E402


def big_store(mb):
    try:
        import numpy
        return numpy.ones(mb * 1024 * 1024 // 8)
    except ImportError:
        return b'\1' * (mb * 1024 * 1024)


def measure(proc, folder, label):
    path = os.path.join(folder, 'bench.chkpt')
    tracked = ck.TrackedInput([], [])
    t0 = time.perf_counter()
    payload, summary = ck.capture(proc, None, tracked, collections.Counter(), 1)
    t1 = time.perf_counter()
    ck.write_file(path, {'fingerprint': proc.pipeline.fingerprint,
                         'version': __import__('job_stream').__version__,
                         'taken': time.time(), 'summary': summary}, payload)
    t2 = time.perf_counter()
    ck.load(path, proc.pipeline.fingerprint)
    t3 = time.perf_counter()
    size = os.path.getsize(path)
    print(f'{label}: {size / 1e6:.1f} MB; pickle {1000 * (t1 - t0):.0f} ms, '
          f'write+fsync+rename {1000 * (t2 - t1):.0f} ms, read+check+unpickle '
          f'{1000 * (t3 - t2):.0f} ms', flush=True)


def queued_items(folder, n=100_000):
    p = Pipeline()
    p.root.stages.append(JobStage(abs, 'abs'))
    proc = Processor(p.compile(), {}, iter(()))
    chain = proc.pipeline.chains[0]
    proc._route([(i, f'item {i}') for i in range(n)], chain.id,
                proc._input_reduction, 'bench')
    measure(proc, folder, f'{n} queued items')


def store_100mb(folder, mb=100):
    from job_stream.pipeline import ReducerSpec
    from job_stream.runner import make_closers
    from job_stream.stages import Reducer
    p = Pipeline()
    p.root.stages.append(JobStage(abs, 'abs'))
    p.root.closer = ReducerSpec(Reducer, 'keep')
    compiled = p.compile()
    proc = Processor(compiled, make_closers(compiled), iter(()))
    proc._input_reduction.store.data = big_store(mb)
    measure(proc, folder, f'reducer store of {mb} MB')


RUN = '''
import sys, time
from job_stream.inline import Work, Object
n, per, store_mb = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
opts = {}
if sys.argv[4] != 'none':
    opts = dict(checkpointFile='run.chkpt', checkpointInterval=float(sys.argv[4]))
def store():
    try:
        import numpy
        return Object(data=numpy.ones(store_mb * 131072), n=0)
    except ImportError:
        return Object(data=b'1' * (store_mb << 20), n=0)
started = time.perf_counter()
with Work(range(n), report=False, **opts) as w:
    @w.job
    def busy(x):
        end = time.process_time() + per
        while time.process_time() < end:
            pass
        return 1
    @w.reduce(store=store, emit=lambda s: s.n)
    def count(s, inputs, others):
        s.n += sum(inputs)
    @w.result
    def show(r):
        assert r == n, r
print(time.perf_counter() - started)
'''


def overhead(folder, duration, intervals, mb=100, per=0.02):
    import job_stream
    script = os.path.join(folder, 'run.py')
    with open(script, 'w') as f:
        f.write(textwrap.dedent(RUN))
    cores = job_stream.getCpuCount()
    n = max(10, int(duration * cores / per))
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, '..', 'src'))

    def one(interval):
        for name in ('run.chkpt', 'run.chkpt.done', 'run.chkpt.journal'):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass
        out = subprocess.run([sys.executable, script, str(n), str(per), str(mb),
                              interval], cwd=folder, env=env, check=True,
                             capture_output=True, text=True)
        checkpoints = out.stderr.count('Checkpoint took')
        return float(out.stdout.split()[-1]), checkpoints, out.stderr

    base, _, _ = one('none')
    print(f'run of {n} jobs of {per * 1000:.0f} ms CPU on {cores} cores with a '
          f'{mb} MB store, no checkpoints: {base:.1f} s', flush=True)
    for interval in intervals:
        t, count, err = one(str(interval))
        took = [int(l.split()[2]) for l in err.splitlines()
                if l.startswith('Checkpoint took')]
        print(f'  checkpoint every {interval:g} s: {t:.1f} s, {count} '
              f'checkpoints (each {min(took, default=0)}-{max(took, default=0)} '
              f'ms), overhead {100 * (t - base) / base:+.1f}%', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='scaled-down durations (about 1 min on an idle machine)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            queued_items(folder, 100_000)
            store_100mb(folder, 100)
            overhead(folder, duration=5, intervals=(2, 0.5), mb=100)
        else:
            queued_items(folder, 100_000)
            store_100mb(folder, 100)
            overhead(folder, duration=300, intervals=(60, 10), mb=100)


if __name__ == '__main__':
    main()
