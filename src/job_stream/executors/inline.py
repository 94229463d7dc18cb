"""The in-process executor: runs each batch at once, in the calling process.

Used for ``useMultiprocessing=False`` (the whole run, or one job).
"""
from __future__ import annotations

from typing import Optional

from .base import Executor
from .chain import ChainRunner


class InlineExecutor(Executor):
    """Runs batches synchronously when they are submitted."""

    slots = 1

    def __init__(self) -> None:
        self._done: list = []
        self._runner: Optional[ChainRunner] = None

    def start(self, chains: dict) -> None:
        self._runner = ChainRunner(chains)
        self._done = []

    def room(self, ahead: bool) -> bool:
        return not self._done

    def submit(self, batch) -> None:
        self._done.append(self._runner.run(batch.id, batch.chain, batch.works,
                                           batch.cuts, batch.position))

    def wait(self, timeout: Optional[float]) -> list:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)
