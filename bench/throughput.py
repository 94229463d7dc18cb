"""job_stream against its peers, side by side, in one run.

    python bench/throughput.py            # the measured run (2,000,000 items)
    python bench/throughput.py --quick    # a smoke test (small sizes, < 1 min)

Four measurements, each comparing contenders *interleaved*: every round runs
A, B, C, ... once (the order rotates between rounds), and the table reports
the median over rounds plus ratios against a reference measured in the same
rounds.  On a shared or drifting machine absolute numbers move; ratios of
interleaved medians move much less.

1. throughput: items/s of a trivial job (``x + 1``) through ``job_stream.map``
   and through a 2-stage inline pipeline (two ``@w.job``, ``@w.result``
   summing), vs ``multiprocessing.Pool.imap`` (hand-tuned chunksize),
   ``concurrent.futures.ProcessPoolExecutor.map`` (chunksize),
   ``joblib.Parallel`` and a ``dask.bag`` on a local ``dask.distributed``
   cluster of 2 single-threaded worker processes (partitions of the same
   size as the chunks).  Goal: job_stream.map >= 0.5x Pool.imap, > joblib.
2. efficiency: 10 ms CPU-bound items (a busy loop calibrated to 10 ms, not a
   sleep): the CPU time the tasks themselves took in that very run (each
   task measures its own thread CPU time), divided by (workers x wall
   time).  Goal: >= the best peer's.
3. makespan: heavy-tailed (lognormal) CPU-bound durations, wall time vs the
   ideal max(sum / workers, longest task), from the tasks' own CPU times in
   that run.  Goal: <= 1.05x.

   Sections 2 and 3 measure the tasks' CPU time in the run itself because
   this VM's CPU speed drifts by 10-20% within minutes: against a serial
   reference timed separately, the ratios moved by +/-8% between rounds.
   CPU time (not wall time) of a task does not grow when the primary
   process takes the core from it, so that cost still shows.
4. rss: peak RSS of the primary process streaming items from a generator
   (each contender in its own fresh subprocess; VmHWM), vs a serial
   loop.  Goal for job_stream's Work with ``@w.result``: within 16 MiB of
   the serial loop.

Every pool is started and warmed up before it is timed (job_stream's pool
persists across runs in one script, and so do the peers' pools here).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))

import job_stream  # noqa: E402
from job_stream.inline import Work  # noqa: E402

WORKERS = 2
# Pool.imap / ProcessPoolExecutor chunksize for trivial items, tuned by hand
# on the 2-core machine (1000..100000 tried; flat above ~5000).
CHUNKSIZE = 10000


# -- the jobs -------------------------------------------------------------
def inc(x):
    return x + 1


def double(x):
    return 2 * x


def spin(n):
    """CPU-bound busy loop of ``n`` iterations."""
    x = 0
    for i in range(n):
        x += i
    return x


def timed_spin(n):
    """``(spin(n), the CPU seconds it took)``."""
    t = time.thread_time()
    x = spin(n)
    return x, time.thread_time() - t


def calibrate(seconds: float) -> tuple:
    """Iterations of :func:`spin` per second, measured here and now."""
    n = 10000
    while True:
        t = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t
        if dt > 0.05:
            return n / dt
        n *= 2


# -- contenders -------------------------------------------------------------
class Peers:
    """The peers' pools, started once and reused across rounds.

    Dask's cluster is the exception: it runs only during Dask's own turn
    (:meth:`dask`), because an idle ``LocalCluster`` (scheduler heartbeats,
    worker and nanny event loops) takes ~17% of one core here, which would
    slow every other contender by a few percent.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = multiprocessing.get_context('fork').Pool(workers)
        self.ppe = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context('fork'))
        import joblib
        self.joblib = joblib
        self.parallel = joblib.Parallel(n_jobs=workers)
        import dask.bag
        self.bag = dask.bag
        self.client = None  # set during dask()
        # warm up everything
        self.pool.map(inc, range(100))
        list(self.ppe.map(inc, range(100)))
        self.parallel(joblib.delayed(inc)(i) for i in range(100))
        job_stream.map(inc, range(100), report=False)

    @contextlib.contextmanager
    def dask(self):
        """A warm local Dask cluster of ``workers`` single-threaded worker
        processes, for the length of one measurement."""
        from dask.distributed import Client, LocalCluster
        with LocalCluster(n_workers=self.workers, threads_per_worker=1,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:  # dask.bag computes on it
            self.bag.from_sequence(range(100), npartitions=2).map(inc).sum().compute()
            client.gather(client.map(inc, range(100)))
            self.client = client
            try:
                yield
            finally:
                self.client = None

    def around(self, name: str):
        """The context a contender's measurement runs in."""
        return self.dask() if name.startswith('dask') else contextlib.nullcontext()

    def close(self):
        self.pool.terminate()
        self.ppe.shutdown()


def js_map(func, items):
    return job_stream.map(func, items, report=False)


def js_work(items):
    total = [0]
    with Work(items, report=False) as w:
        w.job(inc)
        w.job(double)

        @w.result
        def add(r):
            total[0] += r
    return total[0]


def throughput_contenders(peers, n):
    expect = sum(range(1, n + 1))
    expect2 = 2 * expect

    def check(value, want):
        assert value == want, (value, want)

    return {
        'job_stream.map': lambda: check(sum(js_map(inc, range(n))), expect),
        'job_stream Work 2-stage': lambda: check(js_work(range(n)), expect2),
        f'Pool.imap(chunksize={CHUNKSIZE})': lambda: check(
            sum(list(peers.pool.imap(inc, range(n), chunksize=CHUNKSIZE))), expect),
        f'ProcessPoolExecutor.map(chunksize={CHUNKSIZE})': lambda: check(
            sum(list(peers.ppe.map(inc, range(n), chunksize=CHUNKSIZE))), expect),
        'joblib.Parallel': lambda: check(sum(peers.parallel(
            peers.joblib.delayed(inc)(i) for i in range(n))), expect),
        f'dask.bag(partition_size={CHUNKSIZE})': lambda: check(
            peers.bag.from_sequence(range(n), partition_size=CHUNKSIZE)
            .map(inc).sum().compute(), expect),
    }


def task_contenders(peers, sizes):
    """Contenders running ``timed_spin`` over ``sizes`` (long items:
    chunksize 1); each returns the tasks' CPU seconds."""
    want = [spin(s) for s in sizes[:3]]

    def check(out):
        assert [x for x, _ in out[:3]] == want and len(out) == len(sizes)
        return [cpu for _, cpu in out]

    return {
        'job_stream.map': lambda: check(js_map(timed_spin, sizes)),
        'Pool.imap(chunksize=1)': lambda: check(
            list(peers.pool.imap(timed_spin, sizes, chunksize=1))),
        'ProcessPoolExecutor.map': lambda: check(
            list(peers.ppe.map(timed_spin, sizes))),
        'joblib.Parallel': lambda: check(peers.parallel(
            peers.joblib.delayed(timed_spin)(s) for s in sizes)),
        'dask Client.map': lambda: check(peers.client.gather(
            peers.client.map(timed_spin, sizes, pure=False))),
    }


def timed_tasks(fn) -> tuple:
    """``(wall seconds, [CPU seconds of each task])`` of one contender run."""
    t = time.perf_counter()
    cpus = fn()
    return time.perf_counter() - t, cpus


def interleave(contenders: dict, rounds: int, measure, around=None) -> dict:
    """Run every contender once per round, rotating the order; return
    name -> list of measurements.  ``around(name)``, if given, is a context
    the measurement runs in (set up and torn down untimed)."""
    names = list(contenders)
    out = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            with around(name) if around else contextlib.nullcontext():
                out[name].append(measure(name, contenders[name]))
    return out


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- the four measurements --------------------------------------------------
def bench_throughput(peers, n, rounds):
    contenders = throughput_contenders(peers, n)
    raw = interleave(contenders, rounds, lambda name, fn: n / timed(fn),
                     peers.around)
    med = {k: statistics.median(v) for k, v in raw.items()}
    ref = med[f'Pool.imap(chunksize={CHUNKSIZE})']
    rows = [(k, f'{v / 1e6:.3f} M items/s', f'{v / ref:.2f}x Pool.imap',
             _spread(raw[k])) for k, v in med.items()]
    return rows, med


def bench_efficiency(peers, items, rounds, rate):
    sizes = [int(0.010 * rate)] * items
    raw = interleave(task_contenders(peers, sizes), rounds,
                     lambda name, fn: timed_tasks(fn), peers.around)
    eff = {k: [sum(cpus) / (WORKERS * wall) for wall, cpus in v]
           for k, v in raw.items()}
    med = {k: statistics.median(v) for k, v in eff.items()}
    best = max(v for k, v in med.items() if not k.startswith('job_stream'))
    rows = [(k, f'{v:.3f} efficiency', f'{v / best:.2f}x best peer',
             _spread(eff[k])) for k, v in med.items()]
    return rows, med


def bench_makespan(peers, items, rounds, rate, seconds):
    rng = random.Random(42)
    # lognormal with sigma 1.5: a few tasks are 10-50x the median
    raw_d = [rng.lognormvariate(0, 1.5) for _ in range(items)]
    scale = seconds / sum(raw_d)
    durations = [d * scale for d in raw_d]
    sizes = [max(1, int(d * rate)) for d in durations]
    raw = interleave(task_contenders(peers, sizes), rounds,
                     lambda name, fn: timed_tasks(fn), peers.around)
    longest_share = max(durations) / sum(durations)
    # the ideal of each run from its own tasks' CPU times
    ratio = {k: [wall / max(sum(cpus) / WORKERS, max(cpus))
                 for wall, cpus in v] for k, v in raw.items()}
    med = {k: statistics.median(v) for k, v in ratio.items()}
    rows = [(k, f'{v:.3f}x ideal', '', _spread(ratio[k]))
            for k, v in med.items()]
    note = (f'{items} tasks, lognormal(sigma=1.5), {seconds:.1f} s serial, '
            f'longest task {100 * longest_share:.1f}% of the total')
    return rows, med, note


RSS_CONTENDERS = ['serial loop', 'job_stream Work @w.result',
                  'job_stream.map (keeps results)', 'Pool.imap',
                  'joblib.Parallel (generator)',
                  'ProcessPoolExecutor.map']


def rss_child(name: str, n: int) -> None:
    """Run one contender over a generator of ``n`` items; print peak RSS."""
    def gen():
        for i in range(n):
            yield i
    total = 0
    if name == 'serial loop':
        for x in gen():
            total += inc(x)
    elif name == 'job_stream Work @w.result':
        acc = [0]
        with Work(gen(), report=False) as w:
            w.job(inc)

            @w.result
            def add(r):
                acc[0] += r
        total = acc[0]
    elif name == 'job_stream.map (keeps results)':
        total = sum(job_stream.map(inc, gen(), report=False))
    elif name == 'Pool.imap':
        with multiprocessing.get_context('fork').Pool(WORKERS) as pool:
            for r in pool.imap(inc, gen(), chunksize=CHUNKSIZE):
                total += r
    elif name == 'joblib.Parallel (generator)':
        import joblib
        for r in joblib.Parallel(n_jobs=WORKERS, return_as='generator')(
                joblib.delayed(inc)(x) for x in gen()):
            total += r
    elif name == 'ProcessPoolExecutor.map':
        with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
            for r in ex.map(inc, gen(), chunksize=CHUNKSIZE):
                total += r
    else:
        raise SystemExit(f'unknown contender {name!r}')
    assert total == sum(range(1, n + 1)), total
    print(f'RSS {peak_rss_kib()}')


def peak_rss_kib() -> int:
    """Peak RSS of this process in KiB.  VmHWM, not ru_maxrss: Linux copies
    ru_maxrss from the parent at fork, so a child of a big parent would
    report the parent's peak."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == 'darwin' else peak  # bytes there



def bench_rss(n, rounds):
    def measure(name, _):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--rss-child', name,
             '--items', str(n)], capture_output=True, text=True, check=True)
        return int(out.stdout.split('RSS ')[-1]) / 1024
    raw = interleave({k: None for k in RSS_CONTENDERS}, rounds, measure)
    med = {k: statistics.median(v) for k, v in raw.items()}
    base = med['serial loop']
    rows = [(k, f'{v:.1f} MiB peak', f'{v - base:+.1f} MiB vs serial', '')
            for k, v in med.items()]
    return rows, med


# -- output -------------------------------------------------------------------
def _spread(values) -> str:
    if len(values) < 2:
        return ''
    lo, hi = min(values), max(values)
    mid = statistics.median(values)
    return f'+/-{100 * (hi - lo) / 2 / mid:.0f}%' if mid else ''


def print_table(title: str, rows, note: str = '') -> None:
    print(f'\n### {title}' + (f'\n\n{note}' if note else '') + '\n')
    print('| contender | median | ratio | spread |')
    print('|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true',
                    help='small sizes: a smoke test, not a measurement')
    ap.add_argument('--items', type=int, default=None,
                    help='items for throughput and rss (default 2,000,000)')
    ap.add_argument('--rounds', type=int, default=None)
    ap.add_argument('--only', default='throughput,efficiency,makespan,rss')
    ap.add_argument('--rss-child', default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.items or (20000 if args.quick else 2_000_000)
    if args.rss_child:
        rss_child(args.rss_child, n)
        return
    rounds = args.rounds or (1 if args.quick else 3)
    only = set(args.only.split(','))
    print(f'# job_stream benchmark: {WORKERS} workers, {os.cpu_count()} cores, '
          f'Python {sys.version.split()[0]}, {n} items, {rounds} rounds, '
          f'load average {os.getloadavg()[0]:.2f} at start')
    peers = Peers(WORKERS)
    try:
        rate = calibrate(0.1)
        if 'throughput' in only:
            rows, _ = bench_throughput(peers, n, rounds)
            print_table(f'1. throughput, trivial job, {n} items', rows)
        if 'efficiency' in only:
            items = 20 if args.quick else 200
            rows, _ = bench_efficiency(peers, items, rounds, rate)
            print_table(f'2. parallel efficiency, {items} x 10 ms CPU-bound '
                        f'items', rows)
        if 'makespan' in only:
            items, secs = (30, 0.6) if args.quick else (300, 6.0)
            rows, _, note = bench_makespan(peers, items, rounds, rate, secs)
            print_table('3. makespan, heavy-tailed CPU-bound tasks', rows, note)
    finally:
        peers.close()
    if 'rss' in only:
        rows, _ = bench_rss(n, 1 if args.quick else min(rounds, 2))
        print_table(f'4. peak RSS of the primary, {n} items from a generator',
                    rows)
    print(f'\nload average {os.getloadavg()[0]:.2f} at end')


if __name__ == '__main__':
    main()
