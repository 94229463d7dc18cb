"""The class API's building blocks: :class:`Job`, :class:`Reducer`, :class:`Frame`.

These are re-exported by :mod:`job_stream.common`, the module users import::

    from job_stream.common import Job, Reducer

    class AddOne(Job):
        def handleWork(self, work):
            self.emit(work + 1)

    class Sum(Reducer):
        def handleInit(self, store):
            store.total = 0
        def handleAdd(self, store, work):
            store.total += work
        def handleDone(self, store):
            self.emit(store.total)

Methods whose names start with an underscore are for implementers (the
worker and the Processor), not for users.
"""
from __future__ import annotations

from typing import Any

from .objects import Object, flatten_into


class Job:
    """A stage that turns each piece of work into zero or more new ones.

    Override :meth:`handleWork` and call :meth:`emit` for each output.
    ``self.config`` holds the stage's options from the config (a dict), and
    :meth:`postSetup` runs once per instance before its first work.  Set the
    class attribute ``USE_MULTIPROCESSING = False`` to run it in the primary
    process instead of a worker.
    """

    USE_MULTIPROCESSING = True

    def __init__(self) -> None:
        self.config: dict = {}
        self._emitted: list = []
        self._checkpoint = None

    def postSetup(self) -> None:
        """Called once per instance, after ``config`` is set, before any work."""

    def _forceCheckpoint(self, crash: bool) -> None:
        """Test hook: take a checkpoint as soon as the batch holding the
        current work is applied, then exit (``crash=True``, status 1; re-running
        the same command resumes) or go on.  Needs checkpointing to be on."""
        self._checkpoint = bool(crash) or bool(self._checkpoint)

    def handleWork(self, work: Any) -> None:
        """Handle one piece of work; call ``self.emit(x)`` to send ``x`` on."""
        raise NotImplementedError(
            f'{type(self).__name__} must define handleWork(self, work)')

    def emit(self, work: Any) -> None:
        """Send ``work`` (or each member of a ``Multiple``) to the next stage."""
        flatten_into(self._emitted, work)


class Reducer:
    """Closes a module: combines all work of one reduction into a store.

    The store is an :class:`~job_stream.Object` created per reduction;
    :meth:`handleInit` fills it, :meth:`handleAdd` receives each piece of work
    that leaves the module's last stage, and :meth:`handleDone` runs when no
    work of the reduction is left anywhere.  :meth:`emit` sends work on past
    the module; :meth:`recur` sends work round the module's stages again
    within the same reduction (so ``handleDone`` waits for it).

    Stores live in one place (the primary process), so reductions are never
    split and ``handleJoin`` is not called; it is kept for old scripts.
    """

    USE_MULTIPROCESSING = True

    def __init__(self) -> None:
        self.config: dict = {}
        self._emitted: list = []
        self._recurred: list = []

    def postSetup(self) -> None:
        """Called once per instance, after ``config`` is set."""

    def handleInit(self, store: Object) -> None:
        """Fill a new reduction's store."""

    def handleAdd(self, store: Object, work: Any) -> None:
        """Add one piece of work that reached the end of the module."""
        raise NotImplementedError(
            f'{type(self).__name__} must define handleAdd(self, store, work)')

    def handleJoin(self, store: Object, other: Object) -> None:
        """Merge another store into ``store`` (never called; see class doc)."""

    def handleDone(self, store: Object) -> None:
        """The reduction is finished; by default emits the store itself."""
        self.emit(store)

    def emit(self, work: Any) -> None:
        """Send ``work`` past this module, to the stage after it."""
        flatten_into(self._emitted, work)

    def recur(self, work: Any) -> None:
        """Send ``work`` to the first stage of this module, same reduction."""
        flatten_into(self._recurred, work)

    # -- for the Processor ------------------------------------------------
    def _collect(self, method, *args) -> tuple:
        self._emitted, self._recurred = [], []
        method(*args)
        out = self._emitted, self._recurred
        self._emitted, self._recurred = [], []
        return out

    def _open(self) -> Any:
        """Return a new store for a reduction."""
        store = Object()
        self.handleInit(store)
        return store

    def _add(self, store: Any, works: list) -> tuple:
        """Add a batch of works; return (emitted, recurred)."""
        def add_all():
            for work in works:
                self.handleAdd(store, work)
        return self._collect(add_all)

    def _first(self, store: Any, work: Any) -> tuple:
        """Work entering the module: plain reducers pass it to the stages."""
        return [], [work]

    def _done(self, store: Any, first: Any) -> tuple:
        """No work of the reduction is left; return (emitted, recurred)."""
        return self._collect(self.handleDone, store)


class Frame(Reducer):
    """A loop closing a module: one frame per piece of work entering it.

    :meth:`handleFirst` receives the entering work and usually ``recur``\\ s
    work into the module's stages; :meth:`handleNext` receives each piece of
    work leaving them (and may recur more); :meth:`handleDone` runs when all
    of it is finished and either recurs again (the loop goes on) or emits.
    """

    def handleFirst(self, store: Object, work: Any) -> None:
        """A piece of work entered the frame."""
        raise NotImplementedError(
            f'{type(self).__name__} must define handleFirst(self, store, work)')

    def handleNext(self, store: Object, work: Any) -> None:
        """A piece of work left the frame's stages."""
        raise NotImplementedError(
            f'{type(self).__name__} must define handleNext(self, store, work)')

    def _first(self, store: Any, work: Any) -> tuple:
        return self._collect(self.handleFirst, store, work)

    def _add(self, store: Any, works: list) -> tuple:
        def next_all():
            for work in works:
                self.handleNext(store, work)
        return self._collect(next_all)
