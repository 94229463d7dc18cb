"""The cached variant of a chain's :class:`~job_stream.executors.chain.Step`.

Chosen once per stage when a worker builds its chain, so uncached stages
keep the plain loop.  Per item: hash the input, read the entry; on a miss
call the job and write the entry.  The stored value is the job's whole
return (``None`` and ``Multiple`` included; for a ``Job`` class, the list
of what it emitted).
"""
from __future__ import annotations

from ..executors.chain import StageFailure, Step
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

    def run(self, works: list) -> list:
        out: list = []
        append, extend = out.append, out.extend
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
            if r is None:
                continue
            if isinstance(r, Multiple):
                extend(r)
            else:
                append(r)
        return out
