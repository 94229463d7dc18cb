"""Memoized stages: a cached job is not called again for an input it has
already processed with the same code.

Turned on with ``Work(..., cache=DIR)`` (every job) or ``@w.job(cache=DIR)``
(one job; ``cache=False`` turns one off).  The primary process computes each
cached job's *code key* once per run (:mod:`.fingerprint`); workers look up
``(stage, code key, hash of the input)`` in the store (:mod:`.store`) before
calling the job.  See docs/caching.md.
"""
from __future__ import annotations

import os

from ..errors import ConfigurationError
from .fingerprint import explain, fingerprint
from .store import CacheWarning, Store, hash_input

__all__ = ['explain', 'fingerprint', 'prepare', 'CacheWarning', 'Store',
           'hash_input']

#: Key of a JobStage's options holding the prepared cache (root, key, components).
SPEC = '_cache_spec'


def prepare(compiled) -> None:
    """Compute the code key of every cached job of a compiled pipeline (on
    the primary process, before the code is sent to workers) and record
    what it is made of in the cache folder."""
    for chain in compiled.chains:
        for job in chain.jobs:
            root = job.options.get('cache')
            if not root:
                job.options.pop(SPEC, None)
                continue
            depends = job.options.get('depends') or ()
            if not isinstance(depends, (list, tuple)):
                depends = (depends,)
            key, components = fingerprint(job.func, depends, job.config)
            root = os.path.abspath(os.fspath(root))
            try:
                Store(root, job.name, key, components)
            except OSError as e:
                raise ConfigurationError(
                    f'Cannot use the cache folder {root!r} of job '
                    f'{job.name!r}: {e}. Give a folder you can write to.') from e
            job.options[SPEC] = (root, key)
