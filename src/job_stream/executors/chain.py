"""Running a batch through a fused chain of jobs, wherever it runs.

Used by the in-process executor and by worker processes alike, so that user
code is called the same way everywhere: ``Args`` unpacked, ``None`` dropped,
``Multiple`` expanded, ``Job`` classes set up once per run with ``config``
and ``postSetup``.  The inner loop is the hot path of the whole library: it
does per item only the call and the append.

A job function may carry a ``batch_call(works, it, position)`` attribute
(the job of :func:`job_stream.map` does): it is then called once per batch
segment, must call the user's function once per work taken from the iterator
``it`` (so a failure can be traced to its work), and returns the segment's
outputs.  ``position`` is the input position of the segment's first work
(see :attr:`Batch.position`), or None.
"""
from __future__ import annotations

import time
import traceback
from operator import length_hint
from typing import Any, Optional

from ..batch import Done, Failed
from ..errors import short_repr
from ..objects import Args, Multiple
from ..serialization import dumps, loads
from ..stages import Job


NoneType = type(None)


class StageFailure(Exception):
    """User code raised inside a chain; carries the stage and the work."""

    def __init__(self, stage: str, work: Any, error: BaseException):
        super().__init__(stage)
        self.stage, self.work, self.error = stage, work, error


class Step:
    """One job of a chain, ready to run: a function or a set-up Job instance."""

    __slots__ = ('name', 'func', 'job', 'out_kinds')

    def __init__(self, stage):
        self.name = stage.name
        self.job = None
        self.out_kinds = None  # set of the types in run()'s last output
        self.func = stage.func
        if isinstance(stage.func, type) and issubclass(stage.func, Job):
            self.job = stage.func()
            self.job.config = dict(stage.config)
            self.job.postSetup()

    def take_hits(self) -> int:
        """Cache hits since the last call (a plain step has none)."""
        return 0

    def run(self, works: list, position: Optional[int] = None,
            kinds: Optional[set] = None) -> list:
        """Run the job on ``works``; ``kinds``, when known, is the set of
        their types (the previous step's :attr:`out_kinds`)."""
        self.out_kinds = None
        job = self.job
        if job is not None:
            out: list = []
            job._emitted = out
            handle = job.handleWork
            for work in works:
                try:
                    handle(work)
                except Exception as e:
                    raise StageFailure(self.name, work, e) from e
            job._emitted = []
            return out
        func = self.func
        batch_call = getattr(func, 'batch_call', None)
        if batch_call is None:
            if kinds is None:
                kinds = set(map(type, works))
            if Args in kinds:
                return self._run_args(works)
        # The hot path: the calls happen in C (map), and so do the checks for
        # None and Multiple (one set of result types per batch).  On failure,
        # how far ``it`` got tells which work raised.
        it = iter(works)
        try:
            out = (batch_call(works, it, position) if batch_call
                   else list(map(func, it)))
        except Exception as e:
            work = works[len(works) - length_hint(it) - 1]
            raise StageFailure(self.name, work, e) from e
        if batch_call is None:
            kinds = set(map(type, out))
            if NoneType in kinds or any(issubclass(k, Multiple) for k in kinds):
                out = flatten(out)
            else:
                self.out_kinds = kinds
        return out

    def _run_args(self, works: list) -> list:
        """Item by item, for batches holding ``Args`` works."""
        func = self.func
        out: list = []
        for work in works:
            try:
                r = (func(*work.args, **work.kwargs) if type(work) is Args
                     else func(work))
            except Exception as e:
                raise StageFailure(self.name, work, e) from e
            out.append(r)
        return flatten(out)


def flatten(results: list) -> list:
    """Drop ``None`` results and expand ``Multiple`` ones, in order."""
    out: list = []
    append, extend = out.append, out.extend
    for r in results:
        if r is None:
            continue
        if isinstance(r, Multiple):
            extend(r)
        else:
            append(r)
    return out


class ChainRunner:
    """All chains of one run, built lazily on first use (in this process)."""

    def __init__(self, chains: dict):
        self._stages = chains       # chain id -> list of JobStage
        self._steps: dict = {}

    def steps(self, chain_id: int) -> list:
        steps = self._steps.get(chain_id)
        if steps is None:
            steps = self._steps[chain_id] = [make_step(s)
                                             for s in self._stages[chain_id]]
        return steps

    def run(self, batch_id: int, chain_id: int, works: list, cuts: list,
            position: Optional[int] = None):
        """Run a batch; return a :class:`Done` or :class:`Failed` outcome.

        ``position`` is :attr:`Batch.position`; the first job of the chain
        gets each segment's own."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            steps = self.steps(chain_id)
            if len(cuts) == 1:
                segments = [works]
            else:
                segments, start = [], 0
                for n in cuts:
                    segments.append(works[start:start + n])
                    start += n
            outputs = []
            # Per stage of the chain: [items in, cache hits, seconds]; timed
            # per stage and segment, not per item.
            counts = [[0, 0, 0.0] for _ in steps]
            clock = time.perf_counter
            for seg in segments:
                start = position
                if position is not None:
                    position += len(seg)
                kinds = None
                for step, c in zip(steps, counts):
                    c[0] += len(seg)
                    t = clock()
                    seg = step.run(seg, start, kinds)
                    c[2] += clock() - t
                    start, kinds = None, step.out_kinds
                outputs.append(seg)
            for step, c in zip(steps, counts):
                c[1] = step.take_hits()
        except StageFailure as f:
            return failure(batch_id, f.stage, f.work, f.error)
        except Exception as e:  # setting up a Job (postSetup) failed
            return failure(batch_id, self._stages[chain_id][0].name, None, e)
        forced = None
        for step in steps:
            if getattr(step.job, '_checkpoint', None) is not None:
                forced = bool(forced) or step.job._checkpoint
                step.job._checkpoint = None
        return Done(batch_id, outputs, time.perf_counter() - wall,
                    time.process_time() - cpu, checkpoint=forced,
                    stages=counts)


def make_step(stage) -> Step:
    """The step for a stage: cached when the run prepared a cache for it."""
    if stage.options.get('_cache_spec'):
        from ..cache.step import CachedStep
        return CachedStep(stage)
    return Step(stage)


def failure(batch_id: int, stage: str, work: Any, error: BaseException) -> Failed:
    """A :class:`Failed` outcome whose exception survives pickling, or not."""
    frames = error.__traceback__
    while (frames is not None and frames.tb_next is not None
           and (frames.tb_frame.f_code in _PLUMBING
                or frames.tb_frame.f_code.co_name == 'batch_call')):
        frames = frames.tb_next  # start at the user's code
    tb = ''.join(traceback.format_exception(type(error), error, frames))
    try:
        error = loads(dumps(error))
    except Exception:
        error = None
    return Failed(batch_id, stage, short_repr(work), tb, error)


_PLUMBING = (Step.run.__code__, Step._run_args.__code__)
