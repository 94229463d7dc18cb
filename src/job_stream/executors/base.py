"""The executor interface: where batches run.

In the spirit of ``concurrent.futures`` the contract is small.  The runner
hands over batches with :meth:`Executor.submit` while :meth:`Executor.room`
says there is a slot, and collects outcomes (:mod:`job_stream.batch`) with
:meth:`Executor.wait`.  An executor never decides *what* runs next: that is
the Processor's job.  Only the methods marked "for implementers" need
overriding; the rest have working defaults.
"""
from __future__ import annotations

import socket
import sys
from typing import Optional

from ..stats import HostInfo


class Executor:
    """Runs batches of the chains it was started with.

    Attributes:
        slots: how many batches can run at once.
    """

    slots: int = 1

    def start(self, chains: dict) -> None:
        """For implementers: prepare a run of ``chains`` (id -> job stages)."""
        raise NotImplementedError

    def room(self, ahead: bool) -> bool:
        """For implementers: True if a batch could be submitted now.

        With ``ahead``, also count busy slots that may queue one more batch
        behind the running one, so that no round trip separates the two.
        """
        raise NotImplementedError

    def submit(self, batch) -> None:
        """For implementers: start running ``batch``."""
        raise NotImplementedError

    def wait(self, timeout: Optional[float]) -> list:
        """For implementers: outcomes finished so far, waiting up to
        ``timeout`` seconds for at least one."""
        raise NotImplementedError

    def in_flight(self) -> int:
        """For implementers: number of batches submitted without outcome."""
        raise NotImplementedError

    def reclaim(self) -> None:
        """A slot is idle and the Processor has nothing for it: take back a
        batch queued behind a running one (its outcome will be
        :class:`~job_stream.batch.Revoked`), if the executor can.  Default:
        nothing."""

    def abort(self) -> None:
        """Drop every batch in flight (the run failed).  Default: nothing."""

    def hosts(self) -> list:
        """What the report says of each host; default: this machine."""
        return [HostInfo(socket.gethostname().split('.')[0], self.slots)]


def whole_lines() -> None:
    """Make each line printed by this process one write, even under
    ``PYTHONUNBUFFERED``, so that when several processes' output streams
    are merged (worker streams by the primary, rank streams by mpiexec),
    their lines never interleave mid-line."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True, write_through=False)
        except (AttributeError, ValueError):
            pass  # replaced by the user (no reconfigure) or closed
