"""MPI benchmark: job_stream's MPI executor vs mpi4py.futures.MPIPoolExecutor.

Run under MPI with N ranks, e.g.::

    mpiexec -n 2 python bench/mpi.py
    mpiexec -n 3 python bench/mpi.py --items 20000

It measures, in the same mpiexec run, for each engine:

* items/s for trivial tasks (``abs``);
* efficiency for 10 ms tasks (``time.sleep(0.01)``): ideal time / measured,
  where ideal = items * 10 ms / worker slots (job_stream uses one worker
  process per core on every rank; MPIPoolExecutor uses one worker per rank
  other than the root, so both get the same slots argument: see --slots);
* bytes on the wire per item (job_stream: counted by rank 0's executor);

and, separately, the startup time of ``job_stream -- python trivial.py``
(``python bench/mpi.py --startup``, run without mpiexec: the command starts
mpiexec itself), alone, with 1 rank and with 2 ranks, next to the plain
script and ``mpiexec -n 2 python -c pass``.  Results: docs/benchmarks.md.
Prints one JSON line per measurement on rank 0.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def trivial(x):
    return abs(x)


def ten_ms(x):
    time.sleep(0.01)
    return x


def bench_job_stream(items, sleep_items, slots):
    import job_stream
    from job_stream.executors.mpi import wire_stats
    out = {}
    job_stream.map(trivial, range(100), report=False, processes=slots)  # warm
    before = wire_stats()
    t0 = time.perf_counter()
    r = job_stream.map(trivial, range(items), report=False, processes=slots)
    t = time.perf_counter() - t0
    after = wire_stats()
    out['trivial_items_per_s'] = items / t
    out['bytes_per_item'] = (after['bytes_sent'] + after['bytes_received']
                             - before['bytes_sent'] - before['bytes_received']) / items
    # every rank takes part in every run (returning on ranks > 0 before this
    # one left rank 0 alone with its own pool, halving the efficiency)
    t0 = time.perf_counter()
    job_stream.map(ten_ms, range(sleep_items), report=False, processes=slots)
    t = time.perf_counter() - t0
    if r is None:
        return None
    out['slots'] = job_stream.getCpuCount() if slots is None else None
    total_slots = out['slots'] or slots * _size()
    out['ten_ms_efficiency'] = sleep_items * 0.01 / total_slots / t
    return out


def _size():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_size()


def bench_mpi4py(items, sleep_items):
    from mpi4py.futures import MPICommExecutor
    from mpi4py import MPI
    out = {}
    with MPICommExecutor(MPI.COMM_WORLD, root=0) as ex:
        if ex is None:
            return None
        list(ex.map(trivial, range(100), chunksize=10))  # warm
        t0 = time.perf_counter()
        list(ex.map(trivial, range(items), chunksize=max(1, items // 200)))
        out['trivial_items_per_s'] = items / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        list(ex.map(ten_ms, range(sleep_items)))
        t = time.perf_counter() - t0
        workers = MPI.COMM_WORLD.Get_size() - 1
        out['ten_ms_efficiency'] = sleep_items * 0.01 / max(1, workers) / t
    return out


TRIVIAL = 'import job_stream\njob_stream.map(abs, range(4), report=False)\n'


def startup(repeats):
    """Seconds from starting ``job_stream -- python trivial.py`` to its exit.

    trivial.py maps 4 items (so the worker pool's start counts).  Variants,
    run round-robin so that machine load hits them alike: this machine alone
    (no MPI), one rank under MPI (``--host 'localhost cpus=2'``), two ranks
    (``--host localhost,127.0.0.1``); references: the plain script and
    ``mpiexec -n 2 python -c pass`` (MPI's own cost).
    """
    import shutil
    with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
        f.write(TRIVIAL)
        path = f.name
    py = sys.executable
    js = [py, '-m', 'job_stream']
    mpiexec = (os.path.join(os.path.dirname(py), 'mpiexec')
               if os.path.exists(os.path.join(os.path.dirname(py), 'mpiexec'))
               else shutil.which('mpiexec'))
    variants = {
        'plain python trivial.py': [py, path],
        'mpiexec -n 2 python -c pass': [mpiexec, '-n', '2', py, '-c', 'pass'],
        'job_stream -- python trivial.py': js + ['--', py, path],
        'job_stream --host "localhost cpus=2" (1 rank)':
            js + ['--host', 'localhost cpus=2', '--', py, path],
        'job_stream --host localhost,127.0.0.1 (2 ranks)':
            js + ['--host', 'localhost,127.0.0.1', '--', py, path],
    }
    env = dict(os.environ)
    env.pop('PYTHONUNBUFFERED', None)
    times = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for name, command in variants.items():
            t0 = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
            times[name].append(time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
    os.unlink(path)
    return [{'startup': name, 's_min': round(min(t), 3),
             's_median': round(sorted(t)[len(t) // 2], 3),
             'load_avg_1min': [round(min(load), 2), round(max(load), 2)]}
            for name, t in times.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--items', type=int, default=20000)
    ap.add_argument('--sleep-items', type=int, default=400)
    ap.add_argument('--slots', type=int, default=None,
                    help='worker processes per rank for job_stream (default: cores)')
    ap.add_argument('--startup', action='store_true',
                    help='measure job_stream command startup (run without mpiexec)')
    ap.add_argument('--repeats', type=int, default=7,
                    help='rounds of the startup measurement')
    args = ap.parse_args()
    if args.startup:
        for line in startup(args.repeats):
            print(json.dumps(line), flush=True)
        return
    js = bench_job_stream(args.items, args.sleep_items, args.slots)
    if js is not None:
        print(json.dumps({'engine': 'job_stream', 'ranks': _size(), **js}), flush=True)
    m4 = bench_mpi4py(args.items, args.sleep_items)
    if m4 is not None:
        print(json.dumps({'engine': 'mpi4py.futures', 'ranks': _size(), **m4}), flush=True)


if __name__ == '__main__':
    main()
