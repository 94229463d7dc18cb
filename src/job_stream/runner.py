"""``run()``: drive one run, connecting the Processor to its executors.

Every front end (inline, common, map, sweep, cluf) ends here.  The loop is:
fill the executors' free slots with the Processor's next batches, wait a
bounded time for outcomes, apply them, hand results to the result handler,
repeat until the Processor says the run is finished; then print the report.
"""
from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
import time
from collections import deque
from contextlib import nullcontext
from operator import length_hint
from typing import Any, Callable, Iterable, Optional

from .checkpoint import Checkpointer, DeferredSignals, note_run
from .errors import ConfigurationError, JobStreamError, annotate
from .executors import mpi as _mpi
from .executors.inline import InlineExecutor
from .executors.processes import local_cpu_count, shared_pool
from .pipeline import Close, Pipeline
from .processor import CloseTask, Processor

# Longest time the loop blocks waiting for outcomes before it looks around
# (deadlines, progress line); a liveness bound, not a polling interval: the
# wait returns as soon as any outcome arrives.
LOOP_SECONDS = 0.5
# How long the loop waits for workers while a reducer call runs beside it,
# before it looks whether that call has finished.
CLOSE_POLL_SECONDS = 0.002
# Seconds between progress line updates.
PROGRESS_SECONDS = 0.25


def cpu_count(processes: Optional[int] = None) -> int:
    """Worker slots a run gets (summed over MPI ranks)."""
    return _mpi.cpu_count(processes) or processes or local_cpu_count()


def make_closers(compiled) -> dict:
    """One Reducer/Frame instance per Close node, set up for this run."""
    closers = {}
    for node in compiled.nodes:
        if isinstance(node, Close):
            closer = node.closer.factory()
            closer.config = dict(node.closer.config)
            closer.postSetup()
            closers[node.id] = closer
    return closers


def run(pipeline: Pipeline, work: Iterable, *,
        handle_result: Optional[Callable[[Any], None]] = None,
        init: Optional[Callable[[], list]] = None,
        processes: Optional[int] = None, max_attempts: int = 3,
        show_progress: bool = True, report: bool = True,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 600.0,
        checkpoint_sync_interval: float = 0.0,
        record: Optional[str] = None) -> Optional[list]:
    """Run ``pipeline`` over ``work``; return the results, or None if
    ``handle_result`` received them one by one.

    ``init()`` returns work to read before ``work`` (not called when
    resuming).  With ``checkpoint`` (a file path) the run resumes from that
    file if it exists and checkpoints to it (see :mod:`job_stream.checkpoint`).
    ``record``: a JSON-lines file to append this run's record to (default
    ``$JOBS_RECORD``).
    """
    compiled = pipeline.compile()
    world = _mpi.world()
    if world is not None and world.rank > 0:
        # Only rank 0 reads and writes the checkpoint; here a stop signal
        # waits for rank 0 to end the run after writing it.
        with DeferredSignals() if checkpoint is not None else nullcontext():
            _mpi.serve(world, compiled.fingerprint, processes)
        return None
    runs_before = world.runs if world is not None else 0
    try:
        return _run_primary(compiled, world, work, handle_result, init,
                            processes, max_attempts, show_progress, report,
                            checkpoint, checkpoint_interval,
                            checkpoint_sync_interval, record)
    except BaseException as e:
        if world is not None:
            # e.g. the checkpoint was refused before the run started: the
            # other ranks wait for this run, end it there too
            _mpi.end_run(world, e, started=world.runs != runs_before)
        raise


def _run_primary(compiled, world, work, handle_result, init, processes,
                 max_attempts, show_progress, report, checkpoint,
                 checkpoint_interval, checkpoint_sync_interval, record):
    """``run()`` on rank 0 (or without MPI): the Processor's loop."""
    if any(job.options.get('cache') for c in compiled.chains for job in c.jobs):
        from .cache import prepare  # code keys, before the code leaves
        prepare(compiled)
    recorder = None
    if record is not False and (record or os.environ.get('JOBS_RECORD')):
        from .records import Recorder, record_path
        recorder = Recorder(record_path(record))
    error: Optional[BaseException] = None
    source = work  # what the progress line sizes its total on
    note_run(checkpoint is not None)
    ckpt = None
    if checkpoint is not None:
        ckpt = Checkpointer(checkpoint, compiled, checkpoint_interval,
                            checkpoint_sync_interval)
    if ckpt is not None:
        work = ckpt.input(work, init)
        handle_result = ckpt.wrap_handler(handle_result)
    elif init is not None:
        initial = init()
        work = itertools.chain(initial, work) if initial else work
    local = {c.id: c.jobs for c in compiled.chains if not c.use_multiprocessing}
    remote = {c.id: c.jobs for c in compiled.chains if c.use_multiprocessing}
    executors = []
    pool = None
    if world is not None:
        pool = _mpi.MPIExecutor(world, processes, compiled.fingerprint)
        pool.start(remote)
        executors.append((pool, True))
    elif remote:
        pool = shared_pool(processes)
        pool.start(remote)
        executors.append((pool, True))
    inline = InlineExecutor()
    inline.start(local)
    if local or pool is None:
        executors.append((inline, False))
    started = time.perf_counter()
    proc = Processor(compiled, make_closers(compiled), work,
                     slots=pool.slots if pool else 1, max_attempts=max_attempts,
                     state=ckpt.state() if ckpt else None)
    results: Optional[list] = [] if handle_result is None else None
    if ckpt is not None and results is not None:
        results = ckpt.results()
    progress = _Progress(source) if show_progress and _is_tty() else None
    if ckpt is not None:
        ckpt.install_signals()
    # Without worker processes (useMultiprocessing=False everywhere) there
    # is nothing to keep fed: reducer calls stay on this thread.
    closes = _CloseThread(proc, threaded=pool is not None)

    def settle() -> None:  # before a checkpoint
        closes.settle()
        _deliver(proc.take_results(), handle_result, results)
    try:
        while not proc.finished:
            for executor, kind in executors:
                for ahead in (False, True):
                    while executor.room(ahead):
                        batch = proc.next_batch(kind, ahead)
                        if batch is None:
                            break
                        executor.submit(batch)
                if executor.room(False):  # an idle slot, nothing to give it
                    executor.reclaim()
            calling = closes.step()  # input read may go straight to a reducer
            outcomes = inline.wait(0)
            if pool is not None and pool.in_flight():
                outcomes += pool.wait(0 if outcomes else CLOSE_POLL_SECONDS
                                      if calling else LOOP_SECONDS)
            elif calling:
                if not outcomes:
                    closes.wait(LOOP_SECONDS)
            elif (not outcomes and not proc.finished and proc.input_done
                  and not proc.pending_items):
                raise JobStreamError(
                    f'internal error: the run stalled with nothing to run '
                    f'({len(proc.reductions)} reductions open); please '
                    f'report this with your script')
            for outcome in outcomes:
                proc.apply(outcome)
                if getattr(outcome, 'checkpoint', None) is not None:
                    if ckpt is None:
                        raise ConfigurationError(
                            'A job forced a checkpoint (_forceCheckpoint), but '
                            'checkpointing is off: pass checkpointFile= or set '
                            'JOBS_CHECKPOINT.')
                    ckpt.force(outcome.checkpoint)
            closes.step()  # what a finished reducer call routed goes out next
            _deliver(proc.take_results(), handle_result, results)
            if ckpt is not None and not proc.finished:
                ckpt.tick(proc, results, settle)
            if progress is not None:
                progress.update(proc)
        if ckpt is not None:
            ckpt.succeeded()
    except BaseException as e:
        error = e
        if pool is not None:
            pool.abort()
            if world is not None:
                pool.end(e)
        raise
    else:
        if world is not None:
            pool.end()
    finally:
        closes.shutdown()
        if ckpt is not None:
            ckpt.close()
        if progress is not None:
            progress.close()
        if recorder is not None:
            recorder.finish(proc.stats, pool.hosts() if pool else inline.hosts(),
                            error)
            try:
                recorder.write()
            except OSError as e:
                print(f'job_stream: cannot write the run record to '
                      f'{recorder.path}: {e}', file=sys.stderr)
        if report:
            hosts = pool.hosts() if pool else inline.hosts()
            if pool:
                hosts[0].messages = pool.messages
                hosts[0].work_messages = pool.work_messages
                hosts[0].comm_seconds = pool.comm_seconds
            print(proc.stats.report(hosts, time.perf_counter() - started),
                  file=sys.stderr, flush=True)
    return results


class _CloseThread:
    """Runs the Processor's reducer adds and frameEnds (:class:`CloseTask`)
    one at a time on a thread beside the dispatch loop, so that a heavy
    reducer does not leave the workers without work.

    The thread is a daemon: a run that fails while a reducer call is busy
    does not keep the process from exiting.  With ``threaded=False`` the
    calls are made on the loop itself.
    """

    def __init__(self, proc: Processor, threaded: bool = True):
        self._proc = proc
        self._task: Optional[CloseTask] = None
        self._done = threading.Event()
        self._todo: Optional[queue.SimpleQueue] = None
        if threaded:
            self._todo = queue.SimpleQueue()
            threading.Thread(target=self._serve, daemon=True,
                             name='job_stream-reducers').start()

    def _serve(self) -> None:
        while True:
            task = self._todo.get()
            if task is None:
                return
            self._proc.run_close(task)  # never raises: errors go in the task
            self._done.set()

    def step(self) -> bool:
        """Apply a finished call, start the next; True while one runs."""
        if self._todo is None:
            self._proc.run_closes()
            return False
        if self._task is not None and self._done.is_set():
            self._apply()
        if self._task is None:
            self._task = self._proc.next_close()
            if self._task is not None:
                self._todo.put(self._task)
        return self._task is not None

    def wait(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, for the running call to end."""
        if self._task is not None:
            self._done.wait(timeout)

    def settle(self) -> None:
        """Finish the running call and make the waiting ones here, so the
        Processor's state holds no half-reduced work (before a checkpoint).
        Waits as long as the user's reducer call takes."""
        if self._task is not None:
            self._done.wait()
            self._apply()
        self._proc.run_closes()

    def _apply(self) -> None:
        task, self._task = self._task, None
        self._done.clear()
        self._proc.apply_close(task)

    def shutdown(self) -> None:
        if self._todo is not None:
            self._todo.put(None)


def _deliver(batch: list, handle_result, results: Optional[list]) -> None:
    if not batch:
        return
    if handle_result is None:
        results.extend(batch)
        return
    # The loop runs in C; a handler may offer ``for_batch(results)``, the
    # function to call on each result of this batch (inline's skips its
    # Args check when the batch holds no Args).
    for_batch = getattr(handle_result, 'for_batch', None)
    call = for_batch(batch) if for_batch is not None else handle_result
    it = iter(batch)
    try:
        deque(map(call, it), maxlen=0)
    except Exception as e:
        raise annotate(e, 'result handler', batch[len(batch) - length_hint(it) - 1])


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """A progress line on stderr (tqdm): input read, results out, rate, ETA."""

    def __init__(self, work: Iterable):
        from tqdm import tqdm
        total = len(work) if hasattr(work, '__len__') else None
        self._bar = tqdm(total=total, file=sys.stderr, unit='item',
                         dynamic_ncols=True, leave=False, mininterval=0.25)
        self._last = 0.0

    def update(self, proc: Processor) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_SECONDS:
            return
        self._last = now
        self._bar.n = proc.input_position
        self._bar.set_postfix_str(f'{proc.delivered} results', refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
