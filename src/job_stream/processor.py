"""The Processor: the single owner of a run's state, as a plain state machine.

It holds the queued work (per chain, in chunks), the batches in flight, the
open reductions (store, count of outstanding work, parent), the results not
yet handed out, the position in the input, and the statistics.  It starts no
process, thread or socket: a runner asks it for batches
(:meth:`Processor.next_batch`) and feeds back what executors answered
(:meth:`Processor.apply`).  Reducer and frame callbacks run where their
stores live, on the primary process.  The busiest of them, a reducer's add
and a frame's ``frameEnd`` (one call per batch of works leaving a module),
are handed out as :class:`CloseTask` s (:meth:`Processor.next_close`) that
the runner runs off its dispatch loop, so workers stay fed while a heavy
reducer works; works arriving meanwhile for the same reduction wait in one
task, so the next call receives them all at once.

Scheduling is depth-first: the chain nearest the output with queued work is
served first, so results stream out early and memory stays bounded by the
work in flight, not by the input.  Input is read lazily, a batch's worth at a
time, only when nothing deeper is queued.

Reductions end by counting.  A reduction's ``count`` is the number of its
works queued or in flight, plus its open child reductions, plus one while the
input may still feed it.  When it reaches zero the closer's ``handleDone``
runs; if that recurs nothing, the reduction is over and its parent's count
drops by one.

    >>> from job_stream.pipeline import Pipeline, JobStage
    >>> p = Pipeline(); p.root.stages.append(JobStage(abs, 'abs'))
    >>> proc = Processor(p.compile(), {}, iter([-1, -2]))
    >>> b = proc.next_batch(multiprocessing=True)
    >>> proc.apply(Done(b.id, [[abs(w) for w in b.works]]))
    >>> proc.take_results(), proc.finished
    ([1], False)
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from operator import length_hint
from typing import Any, Iterator, Optional

from .batch import Batch, Done, Failed, Lost, Revoked
from .batching import BatchSizer
from .errors import RemoteTraceback, WorkerLostError, annotate, short_repr
from .pipeline import OUTPUT, Chain, Close, CompiledPipeline, Enter
from .stats import Stats


class Reduction:
    """One open reduction (or frame): its store and what it waits for."""

    __slots__ = ('id', 'close', 'store', 'parent', 'count', 'first')

    def __init__(self, id: int, close: Optional[int], store: Any,
                 parent: Optional['Reduction'], first: Any = None):
        self.id = id
        self.close = close      # id of the Close node, None for a bare root
        self.store = store
        self.parent = parent
        self.count = 0
        self.first = first      # the work that opened it (frames)


class CloseTask:
    """Works waiting for one reduction's closer: the reducer's add (or the
    frame's ``frameEnd``), to be called once with all of them.

    :meth:`Processor.run_close` makes the call (on any thread: it touches
    only this task, the reduction's store and its closer) and
    :meth:`Processor.apply_close` routes what it produced.
    """

    __slots__ = ('red', 'works', 'emitted', 'recurred', 'error', 'wall', 'cpu')

    def __init__(self, red: Reduction):
        self.red = red
        self.works: list = []
        self.emitted: list = []
        self.recurred: list = []
        self.error: Optional[BaseException] = None
        self.wall = self.cpu = 0.0


class Processor:
    """Owns the state of one run; see the module documentation.

    Args:
        pipeline: the compiled pipeline.
        closers: Close node id -> the Reducer/Frame instance for it.
        work: the initial work, any iterable (read lazily).
        slots: how many batches can run at once (sizes the read-ahead).
        max_attempts: how often a batch whose worker died is tried in all.
        state: the parts of a checkpoint to resume from, instead of starting.
    """

    def __init__(self, pipeline: CompiledPipeline, closers: dict,
                 work: Iterator, slots: int = 1, max_attempts: int = 3,
                 state: Optional[dict] = None):
        self.pipeline = pipeline
        self.closers = closers
        self.slots = max(1, slots)
        self.max_attempts = max_attempts
        self._order = sorted(pipeline.chains, key=lambda c: -c.depth)
        self.pending = {c.id: deque() for c in pipeline.chains}
        self.pending_items = 0
        self.inflight: dict = {}
        self.reductions: dict = {}
        self.closing: dict = {}  # reduction id -> CloseTask not handed out
        self.closes_out: set = set()  # reductions whose CloseTask is out
        self._locks = {cid: threading.Lock() for cid in closers}
        self.sizers = {c.id: BatchSizer() for c in pipeline.chains}
        self.stats = Stats(pipeline)
        self.results: list = []
        self.delivered = 0
        self.input_position = 0
        self.input_done = False
        self.finished = False
        self._ids = itertools.count()
        self._batch_ids = itertools.count()
        self._input = iter(work)
        if state is None:
            self._start()
        else:  # resuming: the state of a checkpoint (see checkpoint.py)
            from .checkpoint import restore
            restore(self, state)

    # -- the two ways in ------------------------------------------------
    def next_batch(self, multiprocessing: bool,
                   ahead: bool = False) -> Optional[Batch]:
        """Take the next batch for an executor of the given kind, or None.

        Picks the deepest chain with queued work; reads more input only when
        nothing is queued for this kind of executor.  With ``ahead`` the
        batch is to wait on a worker behind a running one (the executor takes
        it back if a slot goes idle, see :class:`Revoked`): only chains that
        have run a batch already, and have no timeout (a deadline runs from
        the dispatch), qualify.
        """
        for _ in range(2):
            for chain in self._order:
                if chain.use_multiprocessing == multiprocessing:
                    queue = self.pending[chain.id]
                    if queue and (not ahead or (
                            chain.timeout is None
                            and self.sizers[chain.id].per_item is not None)):
                        return self._take(chain, queue)
            if self.input_done or self.pending_items >= self._read_ahead():
                return None
            self._read_input()
        return None

    def apply(self, outcome) -> None:
        """Apply what an executor answered for a batch in flight."""
        batch = self.inflight.pop(outcome.batch)
        if isinstance(outcome, Done):
            chain = self.pipeline.nodes[batch.chain]
            self.sizers[chain.id].observe(len(batch.works), outcome.wall)
            self.stats.batch_done(chain.id, outcome.host, len(batch.works),
                                  outcome.wall, outcome.cpu, outcome.stages)
            for (red, count, _), outs in zip(batch.segments, outcome.outputs):
                self._route(outs, chain.next, red, chain.name)
                self._release(red, count)
        elif isinstance(outcome, Lost):
            self._retry(batch, outcome.reason)
        elif isinstance(outcome, Revoked):
            self._requeue(batch, batch.attempts)
        elif isinstance(outcome, Failed):
            raise self._user_error(outcome)
        else:
            raise TypeError(f'not an outcome: {outcome!r}')

    def next_close(self) -> Optional[CloseTask]:
        """Take the oldest reduction's waiting works for its closer, or None.

        One task per reduction is out at a time (its store is being
        changed); works arriving meanwhile wait for the next task.
        """
        for rid in self.closing:
            if rid not in self.closes_out:
                self.closes_out.add(rid)
                return self.closing.pop(rid)
        return None

    def run_close(self, task: CloseTask) -> None:
        """Call the closer on ``task``'s works (user code; any thread)."""
        red = task.red
        closer = self.closers[red.close]
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            with self._locks[red.close]:
                task.emitted, task.recurred = closer._add(red.store, task.works)
        except BaseException as e:  # re-raised by apply_close, on the loop
            task.error = annotate(
                e, self.pipeline.nodes[red.close].closer.name, task.works)
        task.wall = time.perf_counter() - wall
        task.cpu = time.thread_time() - cpu

    def apply_close(self, task: CloseTask) -> None:
        """Route what a :meth:`run_close` call produced."""
        red = task.red
        self.closes_out.discard(red.id)
        self.stats.callback(task.wall, task.cpu)
        if task.error is not None:
            raise task.error
        node = self.pipeline.nodes[red.close]
        self._route(task.recurred, node.first, red, node.closer.name)
        self._route(task.emitted, node.next, red.parent, node.closer.name)
        self._release(red, len(task.works))

    def run_closes(self) -> None:
        """Run every waiting closer call here and now, until none is left
        (before a checkpoint; the caller has none out)."""
        task = self.next_close()
        while task is not None:
            self.run_close(task)
            self.apply_close(task)
            task = self.next_close()

    def take_results(self) -> list:
        """Hand out the results that left the pipeline since the last call."""
        out, self.results = self.results, []
        self.delivered += len(out)
        return out

    def close_input(self) -> None:
        """Stop reading input (used when a run is abandoned)."""
        self.input_done = True

    # -- reading input ----------------------------------------------------
    def _start(self) -> None:
        """Open the root reduction, and the gather modules the input enters."""
        nodes = self.pipeline.nodes
        root_close = self.pipeline.root_close
        store = (self.closers[root_close]._open()
                 if root_close is not None else None)
        red = self._new_reduction(root_close, store, None)
        node = self.pipeline.root_first
        while node != OUTPUT and isinstance(nodes[node], Enter) and nodes[node].gather:
            enter = nodes[node]
            red = self._new_reduction(enter.close, self._open_store(enter), red)
            red.parent.count += 1
            node = enter.first
        self._input_node, self._input_reduction = node, red
        red.count += 1  # held while the input may still feed it

    def _read_ahead(self) -> int:
        node = self._input_node
        size = (self.sizers[node].size
                if node != OUTPUT and isinstance(self.pipeline.nodes[node], Chain)
                else 1)
        return size * self.slots

    def _read_input(self) -> None:
        works = list(itertools.islice(self._input, self._read_ahead()))
        position = self.input_position
        self.input_position += len(works)
        self._route(works, self._input_node, self._input_reduction,
                    'initial work', position)
        if not works:
            self.input_done = True
            self._release(self._input_reduction, 1)

    # -- routing ------------------------------------------------------------
    def _size(self, chain: Chain, queue: deque) -> int:
        """Items in the next batch of ``chain``."""
        if chain.timeout is not None:
            return 1  # one call per batch: the deadline is per call
        sizer = self.sizers[chain.id]
        size = sizer.size
        if size > 1 and sizer.long:
            # Batches of long items shrink towards the end of the work known
            # (guided self-scheduling), so the run does not end with one
            # worker busy with a whole batch while the others idle.
            left = sum(len(chunk[1]) for chunk in queue)
            if chain.id == self._input_node and not self.input_done:
                try:
                    unread = length_hint(self._input, -1)
                except (TypeError, ValueError):  # a broken __length_hint__
                    unread = -1
                left = left + unread if unread >= 0 else None
            if left is not None:
                size = min(size, -(-left // (2 * self.slots)))
        return size

    def _take(self, chain: Chain, queue: deque) -> Batch:
        size = self._size(chain, queue)
        works: list = []
        segments: list = []
        attempts = queue[0][3]
        # The input position of the batch's first work, kept only while the
        # batch holds consecutive input items (see Batch.position).  A batch
        # that starts with input items ends before a chunk that does not
        # follow them (batches taken back, or resumed from a checkpoint, are
        # queued again out of order): map() needs the position.
        position = expect = queue[0][4]
        while queue and len(works) < size and queue[0][3] == attempts:
            chunk = queue[0]
            red, items, producer, _, start = chunk
            if works and expect is not None and start != expect:
                break
            room = size - len(works)
            if len(items) <= room:
                queue.popleft()
                part = items
            else:
                part, chunk[1] = items[:room], items[room:]
                if start is not None:
                    chunk[4] = start + room
            if expect is None or start != expect:
                position = expect = None
            else:
                expect += len(part)
            works.extend(part)
            segments.append((red, len(part), producer))
            if attempts:
                break  # retried work travels alone
        self.pending_items -= len(works)
        batch = Batch(next(self._batch_ids), chain.id, works, segments,
                      attempts, position)
        self.inflight[batch.id] = batch
        return batch

    def _route(self, works: list, node_id: int, red: Reduction,
               producer: str, position: Optional[int] = None) -> None:
        """Send works, produced by ``producer`` within ``red``, to a node.

        ``position`` is the input position of the first work when ``works``
        are consecutive items of the input, else None.
        """
        if not works:
            return
        if node_id == OUTPUT:
            self.results.extend(works)
            return
        node = self.pipeline.nodes[node_id]
        if isinstance(node, Chain):
            self.pending[node_id].append([red, works, producer, 0, position])
            self.pending_items += len(works)
            red.count += len(works)
        elif isinstance(node, Close):  # red.close == node_id
            task = self.closing.get(red.id)
            if task is None:
                task = self.closing[red.id] = CloseTask(red)
            task.works.extend(works)
            red.count += len(works)
        else:
            for work in works:
                self._enter(node, red, work)

    def _enter(self, enter: Enter, parent: Reduction, work: Any) -> None:
        """A work item enters a nested module: it opens its own reduction."""
        red = self._new_reduction(enter.close, self._open_store(enter),
                                  parent, first=work)
        parent.count += 1
        closer = self.closers[enter.close]
        emitted, recurred = self._callback(
            enter.close, work, closer._first, red.store, work)
        red.count += 1  # hold while routing what the frame started
        self._route(recurred, enter.first, red, enter.closer.name)
        self._route(emitted, self.pipeline.nodes[enter.close].next, parent,
                    enter.closer.name)
        self._release(red, 1)

    def _release(self, red: Reduction, count: int) -> None:
        """``count`` works of ``red`` are finished; close it at zero."""
        red.count -= count
        while red is not None and red.count == 0:
            red = self._close(red)

    def _close(self, red: Reduction) -> Optional[Reduction]:
        """Run the closer's done; return the parent if it lost a child."""
        if red.close is not None:
            close = self.pipeline.nodes[red.close]
            closer = self.closers[red.close]
            red.count += 1  # hold while routing what handleDone produced
            emitted, recurred = self._callback(
                red.close, red.store, closer._done, red.store, red.first)
            self._route(recurred, close.first, red, close.closer.name)
            self._route(emitted, close.next, red.parent, close.closer.name)
            red.count -= 1
            if red.count:
                return None  # recurred work keeps the reduction open
            if recurred:
                return red   # recurred work finished at once: done again
        del self.reductions[red.id]
        if red.parent is None:
            self.finished = True
            return None
        red.parent.count -= 1
        return red.parent

    def _retry(self, batch: Batch, reason: str) -> None:
        """A batch's worker was lost: queue its works again, one by one."""
        attempts = batch.attempts + 1
        chain = self.pipeline.nodes[batch.chain]
        if attempts >= self.max_attempts and len(batch.works) == 1:
            raise WorkerLostError(
                f'Work {short_repr(batch.works[0])} for stage {chain.name!r} '
                f'was tried {attempts} times and each time {reason}. '
                f'Check the job for crashes, memory use (the OOM killer) or a '
                f'too short timeout; maxAttempts= sets the number of tries.')
        self._requeue(batch, attempts, alone=True)

    def _requeue(self, batch: Batch, attempts: int, alone: bool = False) -> None:
        """Queue a batch's works again, first in line: one chunk per segment,
        or one per work when they must travel ``alone``."""
        chunks = []
        index = 0
        position = batch.position
        for red, count, producer in batch.segments:
            works = batch.works[index:index + count]
            for part in ([[w] for w in works] if alone else [works]):
                chunks.append([red, part, producer, attempts, position])
                if position is not None:
                    position += len(part)
            index += count
        self.pending[batch.chain].extendleft(reversed(chunks))
        self.pending_items += len(batch.works)

    # -- helpers ------------------------------------------------------------
    def _new_reduction(self, close, store, parent, first=None) -> Reduction:
        red = Reduction(next(self._ids), close, store, parent, first)
        self.reductions[red.id] = red
        return red

    def _open_store(self, enter: Enter) -> Any:
        closer = self.closers[enter.close]
        return self._callback(enter.close, None, closer._open)

    def _callback(self, close: int, work: Any, fn, *args):
        """Run a reducer/frame callback, timing it and naming it on failure.

        Never at the same time as a :meth:`run_close` of the same closer
        (its instance collects what the user's code emits)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            with self._locks[close]:
                return fn(*args)
        except Exception as e:
            raise annotate(e, self.pipeline.nodes[close].closer.name, work)
        finally:
            self.stats.callback(time.perf_counter() - wall,
                                time.thread_time() - cpu)

    def _user_error(self, failed: Failed) -> BaseException:
        error = failed.error
        if error is None:
            error = RuntimeError(failed.traceback.strip().splitlines()[-1])
        error.__cause__ = RemoteTraceback(failed.traceback)
        error.add_note(f'While processing work with target: {failed.stage}\n'
                       f'  work: {failed.work}')
        return error
