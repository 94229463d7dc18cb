"""Benchmark of memoized stages (issue 7).

Measures, in this process (no worker round trips, so only the cache's own
cost shows):

1. per item: a trivial uncached job, a cache miss (call + write), a hit;
   goal: a hit costs less than 1 ms for small inputs;
2. hit cost against input size (numpy arrays): should grow with the size;
3. hit cost against the number of entries already in the cache: should not;
4. end to end: a pipeline run uncached, cached cold, cached warm.

    python bench/cache.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'src'))

import numpy as np  # noqa: E402

from job_stream.cache import SPEC, prepare  # noqa: E402
from job_stream.cache.step import CachedStep  # noqa: E402
from job_stream.executors.chain import Step  # noqa: E402
from job_stream.pipeline import JobStage, Pipeline  # noqa: E402


def trivial(x):
    return x


def total(a):
    return float(a.sum())


def stage(func, folder=None) -> JobStage:
    job = JobStage(func, func.__name__, options={'cache': folder} if folder else {})
    if folder:
        p = Pipeline()
        p.root.stages.append(job)
        prepare(p.compile())
        assert job.options[SPEC]
    return job


def per_item(step, works, repeat=1) -> float:
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        step.run(works)
        best = min(best, time.perf_counter() - t)
    return best / len(works)


def us(seconds: float) -> str:
    return f'{seconds * 1e6:9.1f} us'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='small sizes (smoke test)')
    ap.add_argument('--dir', help='cache folder (default: a temporary folder; '
                    'point it at a shared filesystem to measure that)')
    args = ap.parse_args()
    n = 300 if args.quick else 5000
    root = args.dir or tempfile.mkdtemp(prefix='js-cache-bench-')
    try:
        print(f'cache folder: {root}   items: {n}')
        print('\n1. per item, small input (int)')
        works = list(range(n))
        plain = Step(stage(trivial))
        cached = CachedStep(stage(trivial, os.path.join(root, 'a')))
        t_plain = per_item(plain, works, repeat=5)
        t_miss = per_item(cached, works)
        t_hit = per_item(cached, works, repeat=3)
        print(f'   trivial call   {us(t_plain)}')
        print(f'   cache miss     {us(t_miss)}   (call + hash + write)')
        print(f'   cache hit      {us(t_hit)}   goal < 1000 us: '
              f'{"met" if t_hit < 1e-3 else "NOT met"}')

        print('\n2. hit cost against input size (float64 arrays)')
        sizes = [10, 1000, 100_000] if args.quick else [10, 1000, 100_000, 1_000_000, 10_000_000]
        for size in sizes:
            arrays = [np.random.rand(size) for _ in range(max(3, min(50, n // 10)))]
            step = CachedStep(stage(total, os.path.join(root, f'b{size}')))
            step.run(arrays)
            print(f'   {size * 8 / 1e6:10.3f} MB  hit {us(per_item(step, arrays, 3))}'
                  f'   (plain call {us(per_item(Step(stage(total)), arrays, 3))})')

        print('\n3. hit cost against cache size (same 200 lookups)')
        counts = [200, 2000] if args.quick else [200, 2000, 20_000, 100_000]
        step = CachedStep(stage(trivial, os.path.join(root, 'c')))
        filled = 0
        probe = list(range(200))
        for count in counts:
            step.run(list(range(filled, count)))
            filled = count
            print(f'   {count:7d} entries  hit {us(per_item(step, probe, 3))}')

        print('\n4. end to end (worker processes), items sleep 1 ms')
        from job_stream.inline import Work

        def run(cache):
            opts = {'cache': cache} if cache else {}
            t = time.perf_counter()
            with Work(range(n), showProgress=False, report=False, **opts) as w:
                w.job(_sleepy)
            return time.perf_counter() - t
        folder = os.path.join(root, 'd')
        print(f'   uncached      {run(None):7.2f} s')
        print(f'   cached, cold  {run(folder):7.2f} s')
        print(f'   cached, warm  {run(folder):7.2f} s')
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def _sleepy(x):
    time.sleep(0.001)
    return x


if __name__ == '__main__':
    main()
