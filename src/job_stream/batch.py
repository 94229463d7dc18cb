"""The vocabulary shared by the Processor and the executors: batches and outcomes.

A :class:`Batch` is the unit of dispatch: a list of works for one chain, cut
into *segments* (consecutive works that belong to the same reduction).  An
executor runs it and answers with exactly one outcome:

* :class:`Done` - the outputs, one list per segment, the time spent, and
  whether a job forced a checkpoint;
* :class:`Failed` - user code raised; carries the traceback as text;
* :class:`Lost` - the worker died or overran its timeout; the batch may be
  retried;
* :class:`Revoked` - the executor took the batch back before it started
  (it was queued behind another on a worker that stayed busy while a slot
  went idle); it is queued again as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Batch:
    """Works sent to one chain.  ``segments`` is a list of
    ``(reduction, count, producer)``; ``cuts`` the counts alone, which is
    all a worker needs to split its outputs the same way.  ``position`` is
    the input position of the first work when the batch holds consecutive
    items of the input (so :func:`job_stream.map` can put results in order
    without an index per item), else None."""
    id: int
    chain: int
    works: list
    segments: list
    attempts: int = 0
    position: Optional[int] = None

    @property
    def cuts(self) -> list:
        return [count for _, count, _ in self.segments]


@dataclass
class Done:
    batch: int
    outputs: list            # one list of emitted works per segment
    wall: float = 0.0        # seconds in user code
    cpu: float = 0.0         # CPU seconds in user code
    host: int = 0            # index of the host (rank) that ran it
    checkpoint: Optional[bool] = None  # a job forced one: False go on, True exit
    stages: Optional[list] = None  # per job of the chain: [items, cache hits, seconds]


@dataclass
class Failed:
    batch: int
    stage: str               # name of the stage that raised
    work: str                # short repr of the work it was given
    traceback: str           # formatted remote traceback
    error: Optional[BaseException] = None  # the exception, when it unpickles


@dataclass
class Lost:
    batch: int
    reason: str              # e.g. 'worker process killed by signal SIGKILL'
    extra: dict = field(default_factory=dict)


@dataclass
class Revoked:
    batch: int


Outcome = Any  # Done | Failed | Lost | Revoked
