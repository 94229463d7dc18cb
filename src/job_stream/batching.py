"""Adaptive batch sizing: how many work items one dispatch carries.

Tiny tasks must travel in big batches or the per-message cost drowns them;
long tasks must travel one at a time or they wait behind each other while a
worker idles.  :class:`BatchSizer` learns the time per item of one chain from
the batches it has run and grows the batch geometrically (x2 per completed
batch, from 1) towards ``TARGET_SECONDS`` worth of work; items longer than
``LONG_ITEM_SECONDS`` travel one per batch.

    >>> s = BatchSizer()
    >>> s.size
    1
    >>> s.observe(items=1, seconds=1e-6)
    >>> s.size
    2
"""
from __future__ import annotations

from collections import deque

# Wall time one batch should take.  Set with bench/throughput.py, section 1
# (throughput, 2M trivial items, 2 workers): at 20 ms per batch the per-batch
# cost (pickling, one socket round trip, the Processor's bookkeeping) is
# well under 1% of the batch, while the tail after the last input item stays
# <= ~20 ms per worker; at 5 ms the per-message cost dominated trivial items.
TARGET_SECONDS = 0.02
# Items longer than this travel one per batch, only to an idle worker (no
# prefetch), so a long item never waits behind another on a busy worker
# while a worker idles.  Set with bench/throughput.py, sections 2 and 3
# (10 ms items, heavy-tailed makespan): batching/prefetching 10 ms items cost
# up to one queued batch of tail per worker (several % of a 1 s run); one
# round trip (~0.1-0.5 ms) is small against items of 2 ms and more.  The
# rule looks at the recent longest item (BatchSizer.peak), not the average,
# because in section 3 one long item hidden in a batch of short ones, or a
# short batch queued behind a long item, is what lengthens the makespan.
LONG_ITEM_SECONDS = 0.002
# Upper bound on items per batch.  Set with bench/throughput.py: section 1
# (2M trivial items) ran as fast with 8192 or 16384 as with 65536, and
# section 4 (peak RSS, streaming 2M items through @w.result) went from +15.6
# to +7 MiB over a serial loop: the read-ahead (size x workers) plus two
# batches per worker in flight are what the primary holds.
MAX_ITEMS = 16384
# Long items are still queued one ahead per worker when their durations are
# regular: the last REGULAR_SAMPLES batches all within a factor
# REGULAR_SPREAD of each other.  Then the round trip between two items
# (~0.2-0.5 ms here) does not leave the worker idle (bench/throughput.py,
# section 2), while heavy-tailed durations (section 3) never look regular,
# so a short item does not wait behind a long one there.
# Not above REGULAR_MAX_SECONDS per item, though: there the round trip is
# negligible, and an item queued behind a long one could cost a whole item
# at the end of a run.
REGULAR_SAMPLES = 6
REGULAR_SPREAD = 1.5
REGULAR_MAX_SECONDS = 0.05


class BatchSizer:
    """Per-chain estimate of seconds per item, and the batch size it implies."""

    __slots__ = ('size', 'per_item', 'peak', 'recent')

    def __init__(self):
        self.size = 1
        self.per_item = None  # seconds per item, exponentially averaged
        # Recent longest seconds per item: the largest sample, halved at
        # each batch, so one long item among short ones (heavy-tailed
        # durations) stops batching and prefetch for a while.
        self.peak = 0.0
        # the last seconds per item, for `regular`
        self.recent: deque = deque(maxlen=REGULAR_SAMPLES)

    def observe(self, items: int, seconds: float) -> None:
        """Record that a batch of ``items`` took ``seconds`` in user code."""
        if items <= 0:
            return
        sample = seconds / items
        self.per_item = (sample if self.per_item is None
                         else 0.5 * self.per_item + 0.5 * sample)
        self.peak = max(sample, 0.5 * self.peak)
        self.recent.append(sample)
        if self.peak > LONG_ITEM_SECONDS:
            self.size = 1
            return
        ideal = TARGET_SECONDS / max(self.per_item, 1e-9)
        self.size = int(max(1, min(ideal, 2 * self.size, MAX_ITEMS)))

    @property
    def regular(self) -> bool:
        """True when the last batches took about the same, moderate, time
        per item."""
        recent = self.recent
        return (len(recent) == REGULAR_SAMPLES
                and max(recent) <= REGULAR_MAX_SECONDS
                and max(recent) <= REGULAR_SPREAD * min(recent))

    @property
    def prefetch(self) -> bool:
        """True when a batch may be queued ahead on a busy worker: items
        short enough, or regular in duration.

        Long items (over ``LONG_ITEM_SECONDS``) of irregular durations are
        sent one at a time to idle workers only, so none waits behind
        another on a busy worker.
        """
        return self.per_item is not None and (self.peak <= LONG_ITEM_SECONDS
                                              or self.regular)
