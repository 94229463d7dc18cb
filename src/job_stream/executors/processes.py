"""The local worker pool: the default executor, one worker process per core.

The pool is ours, not ``multiprocessing.Pool`` (which hangs when a worker is
SIGKILLed) nor ``ProcessPoolExecutor``/loky (where one dead worker breaks the
whole pool): here a dead worker's batches come back as :class:`Lost`
outcomes, the worker is replaced, and the Processor retries the work.

Workers are started as ``python -m job_stream._worker`` (never a fork of the
user's script, never a fork of a process that initialised MPI), with BLAS and
OpenMP capped to one thread each unless the user chose otherwise, and without
the MPI launcher's environment.  Their stdout/stderr are pipes that threads
copy to the primary's current ``sys.stdout``/``sys.stderr`` as soon as
anything arrives.  The pool outlives a run so later runs in the same script
start at once; it is shut down when the interpreter exits.
"""
from __future__ import annotations

import atexit
import codecs
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait as wait_any
from typing import Optional

from ..batch import Failed, Lost, Revoked
from ..errors import ConfigurationError, short_repr
from ..hosts import usable_cpus
from ..serialization import dumps, dumps_code, find_unpicklable, loads
from .._worker import BATCH, IDS, REVOKE
from .base import Executor

# Environment of worker processes: one BLAS/OpenMP thread per worker (they
# are one per core already), unless the user set these variables.
THREAD_CAPS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
               'VECLIB_MAXIMUM_THREADS', 'NUMEXPR_NUM_THREADS')
# Prefixes of MPI launchers' variables, removed so that a worker that
# imports mpi4py does not try to join the job's MPI world.
MPI_PREFIXES = ('PMI_', 'PMIX_', 'OMPI_', 'MPICH_', 'HYDRA_', 'HYDI_',
                'I_MPI_', 'MPI_LOCALRANKID', 'MPI_LOCALNRANKS')
SOCKET_BUFFER = 4 << 20


def local_cpu_count() -> int:
    """Cores this process may use (its CPU affinity bounded by its cgroup's
    CPU quota), at least 1: the default size of the pool."""
    return usable_cpus()


def worker_environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(MPI_PREFIXES)}
    for name in THREAD_CAPS:
        env.setdefault(name, '1')
    return env


class _Worker:
    """One worker process, its socket, and the batches it holds."""

    def __init__(self, env: dict):
        mine, theirs = socket.socketpair()
        for s in (mine, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'job_stream._worker', str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        theirs.close()
        self.conn = Connection(mine.detach())
        # batch id -> (batch, deadline or None), in the order sent: the
        # worker runs them in that order, so the first is the one running
        # (or about to) and the others have not started
        self.inflight: dict = {}
        self.revoking: set = set()  # batch ids asked back, not answered yet
        self.run_id = None
        self.forwarders = [
            threading.Thread(target=_forward, args=(pipe, name), daemon=True)
            for pipe, name in ((self.proc.stdout, 'stdout'),
                               (self.proc.stderr, 'stderr'))]
        for thread in self.forwarders:
            thread.start()

    def send(self, data: bytes) -> None:
        self.conn.send_bytes(data)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return f'the worker process (pid {self.proc.pid}) stopped answering'
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return (f'the worker process (pid {self.proc.pid}) was killed by '
                    f'signal {name}')
        return f'the worker process (pid {self.proc.pid}) exited with status {code}'

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def _forward(pipe, name: str) -> None:
    """Copy a worker's output to the primary's sys.stdout / sys.stderr."""
    decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
    fd = pipe.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b''
        text = decoder.decode(data, final=not data)
        stream = getattr(sys, name)
        if text and stream is not None:
            try:
                stream.write(text)
                stream.flush()
            except (ValueError, OSError):  # stream closed at interpreter exit
                pass
        if not data:
            pipe.close()
            return


class ProcessExecutor(Executor):
    """Runs batches in a pool of local worker processes.

    Example (what :func:`job_stream.inline.Work.run` does for you)::

        pool = ProcessExecutor(processes=2)
        pool.start({chain.id: chain.jobs})
        pool.submit(batch); outcomes = pool.wait(timeout=1.0)
    """

    def __init__(self, processes: Optional[int] = None):
        if processes is not None and processes < 1:
            raise ConfigurationError(
                f'processes must be at least 1 (got {processes})')
        self.slots = processes or local_cpu_count()
        self._workers: list = []
        self._run_id = 0
        self._run_message = b''
        self._timeouts: dict = {}
        self._has_timeouts = False
        self._ready: list = []
        self.messages = self.work_messages = 0
        self.comm_seconds = 0.0

    # -- lifecycle ----------------------------------------------------------
    def start(self, chains: dict) -> None:
        try:
            blob = dumps_code(chains)
        except Exception as e:
            raise ConfigurationError(
                f'The pipeline\'s jobs cannot be sent to worker processes: '
                f'{e!r}. Make what the job functions use picklable, or run '
                f'those jobs with useMultiprocessing=False.') from e
        self._run_id += 1
        self._run_message = dumps(('run', self._run_id, blob, list(sys.path),
                                   os.getcwd()))
        self._timeouts = {cid: stages[0].timeout for cid, stages in chains.items()}
        self._has_timeouts = any(t is not None for t in self._timeouts.values())
        self._ready = []
        self.messages = self.work_messages = 0
        self.comm_seconds = 0.0
        self.spawn()
        for w in self._workers:
            self._begin_run(w)

    def spawn(self) -> None:
        """Start the missing worker processes now (``start`` does it too);
        calling it early overlaps their start with other startup work."""
        self._workers = [w for w in self._workers if w.proc.poll() is None]
        while len(self._workers) < self.slots:
            self._workers.append(_Worker(worker_environment()))

    def _begin_run(self, worker: _Worker) -> None:
        worker.inflight.clear()
        worker.revoking.clear()
        worker.send(self._run_message)
        worker.run_id = self._run_id
        self.messages += 1

    def shutdown(self) -> None:
        """Stop every worker (idempotent)."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.close()
        deadline = time.monotonic() + 2
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.kill()
                w.proc.wait()
        for w in workers:  # copy the last of their output before we exit
            for thread in w.forwarders:
                thread.join(max(0.01, deadline + 1 - time.monotonic()))

    def abort(self) -> None:
        """Kill the workers still busy with this run's batches."""
        for w in self._workers:
            if w.inflight:
                w.kill()
                w.inflight.clear()
                # reap it, so the next start() sees it dead and replaces it
                # (sending to it would raise BrokenPipeError)
                try:
                    w.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._ready = []

    # -- the executor contract ----------------------------------------------
    def room(self, ahead: bool) -> bool:
        limit = 2 if ahead else 1
        return any(len(w.inflight) < limit for w in self._workers)

    def reclaim(self) -> None:
        """Ask workers for the batches queued behind their running one, one
        per idle worker; the worker answers ``revoked`` if it had not started
        it (else its outcome comes as usual)."""
        idle = sum(1 for w in self._workers if not w.inflight) - sum(
            len(w.revoking) for w in self._workers)  # asked already
        for w in self._workers:
            if idle <= 0:
                return
            for batch_id in list(w.inflight)[1:]:
                if batch_id not in w.revoking:
                    w.revoking.add(batch_id)
                    try:
                        w.send(REVOKE + IDS.pack(self._run_id, batch_id))
                    except OSError:
                        pass  # the worker died; wait() reports its batches
                    self.messages += 1
                    idle -= 1
                    break

    def in_flight(self) -> int:
        return sum(len(w.inflight) for w in self._workers) + len(self._ready)

    def submit(self, batch) -> None:
        worker = min(self._workers, key=lambda w: len(w.inflight))
        t0 = time.perf_counter()
        try:
            data = BATCH + IDS.pack(self._run_id, batch.id) + dumps(
                ('batch', self._run_id, batch.id, batch.chain, batch.works,
                 batch.cuts, batch.position))
        except Exception:
            self._ready.append(self._unpicklable(batch))
            return
        timeout = self._timeouts.get(batch.chain)
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
        worker.inflight[batch.id] = (batch, deadline)
        try:
            worker.send(data)
        except OSError:
            pass  # the worker died; wait() reports its batches as lost
        self.messages += 1
        self.work_messages += 1
        self.comm_seconds += time.perf_counter() - t0

    def wait(self, timeout: Optional[float]) -> list:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        busy = {w.conn: w for w in self._workers if w.inflight}
        deadlines = self._has_timeouts and [
            d for w in busy.values() for _, d in w.inflight.values()
            if d is not None]
        if deadlines:
            left = max(0.0, min(deadlines) - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        outcomes: list = []
        for conn in wait_any(list(busy), timeout):
            worker = busy[conn]
            t0 = time.perf_counter()
            try:
                msg = loads(conn.recv_bytes())
            except (EOFError, OSError):
                outcomes.extend(self._replace(worker, worker.death_reason()))
                continue
            self.comm_seconds += time.perf_counter() - t0
            self.messages += 1
            kind, run_id, outcome = msg
            if kind == 'revoked':
                outcome = Revoked(outcome)
            else:
                self.work_messages += 1
            if run_id == self._run_id and outcome.batch in worker.inflight:
                del worker.inflight[outcome.batch]
                worker.revoking.discard(outcome.batch)
                outcomes.append(outcome)
        if not deadlines:
            return outcomes
        now = time.monotonic()
        for worker in list(busy.values()):
            if worker in self._workers and any(
                    d is not None and d <= now for _, d in worker.inflight.values()):
                worker.kill()
                worker.proc.wait()
                outcomes.extend(self._replace(
                    worker, 'the job overran its timeout and its worker '
                    'process was killed'))
        return outcomes

    # -- failures -------------------------------------------------------------
    def _replace(self, worker: _Worker, reason: str) -> list:
        """A worker is gone: report the batch it was running lost, and those
        queued behind it taken back (they never started, so they are not
        charged an attempt); start a new worker."""
        lost = [Lost(batch_id, reason) if i == 0 else Revoked(batch_id)
                for i, batch_id in enumerate(worker.inflight)]
        worker.close()
        index = self._workers.index(worker)
        self._workers[index] = fresh = _Worker(worker_environment())
        self._begin_run(fresh)
        return lost

    def _unpicklable(self, batch) -> Failed:
        index, error = find_unpicklable(batch.works)
        start = 0
        producer = batch.segments[0][2]
        for _, count, name in batch.segments:
            if start <= index < start + count:
                producer = name
                break
            start += count
        message = (
            f'Work produced by {producer!r} cannot be pickled to send it to a '
            f'worker process: {error!r}. Produce plain data (numbers, strings, '
            f'lists, dicts, numpy arrays, picklable objects), or run the next '
            f'job with useMultiprocessing=False.')
        return Failed(batch.id, producer, short_repr(batch.works[index]),
                      message + '\n', TypeError(message))


_POOL: Optional[ProcessExecutor] = None


def shared_pool(processes: Optional[int] = None) -> ProcessExecutor:
    """The process-wide pool, (re)sized to ``processes`` workers."""
    global _POOL
    size = processes or local_cpu_count()
    if _POOL is not None and _POOL.slots != size:
        _POOL.shutdown()
        _POOL = None
    if _POOL is None:
        _POOL = ProcessExecutor(size)
    return _POOL


@atexit.register
def _shutdown_pool() -> None:
    if _POOL is not None:
        _POOL.shutdown()
