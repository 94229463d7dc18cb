"""The cached variant of a chain's :class:`~job_stream.executors.chain.Step`.

Chosen once per stage when a worker builds its chain, so uncached stages
keep the plain loop.  Per item: hash the input, read the entry; on a miss
call the job and write the entry.  The stored value is the job's whole
return (``None`` and ``Multiple`` included; for a ``Job`` class, the list
of what it emitted).
"""
from __future__ import annotations

from ..executors.chain import StageFailure, Step, flatten
from ..objects import Args, Multiple
from . import SPEC
from .store import MISSING, Store, hash_input


class CachedStep(Step):
    __slots__ = ('store', 'hits')

    def __init__(self, stage):
        super().__init__(stage)
        root, key = stage.options[SPEC]
        self.store = Store(root, stage.name, key)
        self.hits = 0

    def take_hits(self) -> int:
        hits, self.hits = self.hits, 0
        return hits

    def _call(self, work):
        job = self.job
        if job is not None:
            emitted: list = []
            job._emitted = emitted
            try:
                job.handleWork(work)
            finally:
                job._emitted = []
            return Multiple(emitted)
        if type(work) is Args:
            return self.func(*work.args, **work.kwargs)
        return self.func(work)

    def run(self, works: list, position=None, kinds=None) -> list:
        self.out_kinds = None
        if getattr(self.func, 'batch_call', None) is not None:
            # map(): values as they are (None kept), one (position, values)
            # pair per segment, as the uncached batch_call returns them
            return [(position, self._values(works))] if works else []
        return flatten(self._values(works))

    def _values(self, works: list) -> list:
        """The job's return value for each work, from the cache if there."""
        values: list = []
        get, put = self.store.get, self.store.put
        for work in works:
            digest = hash_input(work)
            r = get(digest)
            if r is MISSING:
                try:
                    r = self._call(work)
                except Exception as e:
                    raise StageFailure(self.name, work, e) from e
                put(digest, r)
            else:
                self.hits += 1
            values.append(r)
        return values
