"""Adaptive batch sizing: how many work items one dispatch carries.

Tiny tasks must travel in big batches or the per-message cost drowns them;
long tasks must travel one at a time or they wait behind each other while a
worker idles.  :class:`BatchSizer` learns the time per item of one chain from
the batches it has run and grows the batch geometrically (x2 per completed
batch, from 1) towards ``TARGET_SECONDS`` worth of work; items longer than
``LONG_ITEM_SECONDS`` travel one per batch, unless their durations are
regular (then batches of ``REGULAR_BATCH_SECONDS``, which the Processor
shrinks towards the end of the run).

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
# Items longer than this are *long*: one per batch (unless their durations
# are regular, below), so a long item never sits in a batch behind another.
# Set with bench/throughput.py, section 3 (heavy-tailed makespan): one long
# item hidden in a batch of short ones lengthens the makespan.  The rule
# looks at the recent longest item (BatchSizer.peak), not the average, for
# that reason.
LONG_ITEM_SECONDS = 0.002
# Upper bound on items per batch.  Set with bench/throughput.py: section 1
# (2M trivial items) ran as fast with 8192 or 16384 as with 65536, and
# section 4 (peak RSS, streaming 2M items through @w.result) went from +15.6
# to +7 MiB over a serial loop: the read-ahead (size x workers) plus two
# batches per worker in flight are what the primary holds.
MAX_ITEMS = 16384
# Long items of regular duration (the last REGULAR_SAMPLES batches all within
# a factor REGULAR_SPREAD of each other) travel in batches of about
# REGULAR_BATCH_SECONDS: every batch costs the primary ~0.3 ms of CPU on
# this 2-core machine (taken from a worker's core), 3% of a 10 ms item.
# bench/throughput.py, section 2 (200 x 10 ms items): efficiency 0.89 one
# item per batch, 0.96 in batches of 50 ms.  The Processor shrinks these
# batches towards the end of the known work, so the run does not end with one
# worker busy with a whole batch while the others idle.  Heavy-tailed
# durations (section 3) never look regular.
REGULAR_SAMPLES = 6
REGULAR_SPREAD = 1.5
REGULAR_BATCH_SECONDS = 0.05


class BatchSizer:
    """Per-chain estimate of seconds per item, and the batch size it implies."""

    __slots__ = ('size', 'per_item', 'peak', 'recent')

    def __init__(self):
        self.size = 1
        self.per_item = None  # seconds per item, exponentially averaged
        # Recent longest seconds per item: the largest sample, halved at
        # each batch, so one long item among short ones (heavy-tailed
        # durations) stops batching for a while.
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
        if self.long:
            target = REGULAR_BATCH_SECONDS if self.regular else 0.0
        else:
            target = TARGET_SECONDS
        ideal = target / max(self.per_item, 1e-9)
        self.size = int(max(1, min(ideal, 2 * self.size, MAX_ITEMS)))

    @property
    def long(self) -> bool:
        """True when a recent item took longer than ``LONG_ITEM_SECONDS``."""
        return self.peak > LONG_ITEM_SECONDS

    @property
    def regular(self) -> bool:
        """True when the last batches took about the same time per item."""
        recent = self.recent
        return (len(recent) == REGULAR_SAMPLES
                and max(recent) <= REGULAR_SPREAD * min(recent))
