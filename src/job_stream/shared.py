"""Shared datasets: a large value sent to each host once, not once per use.

An iterative algorithm calls ``map`` (or runs a ``Work``) many times with
new, small parameters over the same large dataset.  Wrap the dataset once
in :class:`Shared` and use ``.value`` inside jobs::

    import job_stream
    data = job_stream.Shared(list(range(100000)))

    def loss(p):
        return sum(x * p for x in data.value[:10])

    for step in range(3):
        print(job_stream.map(loss, [1, 2], report=False))

A :class:`Shared` pickles as a reference (its content digest, a few dozen
bytes), whether it is captured by a job function, kept in a frame's store
or carried inside work.  Its content is written once per host into a store
directory that the host's worker processes read (and memoize per process);
under MPI, rank 0 sends the content to a rank the first time a message for
that rank refers to it, and never again in the same process.  This is qjam's
split between small ``params`` and a large ``dataset``, without a second
argument everywhere.

The store directory is ``$JOB_STREAM_SHARED_DIR``, created (and removed at
exit) by the first job_stream process of a process tree; worker processes
inherit it.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import pickle
import shutil
import tempfile
import threading
from typing import Any, Optional

ENV = 'JOB_STREAM_SHARED_DIR'
_PROTOCOL = 5

# Values already loaded in this process: key -> value.
_loaded: dict = {}
# Keys referenced by objects pickled inside tracking(); per thread.
_tracking = threading.local()


# The first job_stream process of a process tree names the store (worker
# processes it starts inherit the variable) and removes it at exit.
if not os.environ.get(ENV):
    os.environ[ENV] = os.path.join(tempfile.gettempdir(),
                                   f'job_stream-shared-{os.getpid()}')
    atexit.register(shutil.rmtree, os.environ[ENV], True)


def store_dir() -> str:
    """This host's store directory (created on first use)."""
    path = os.environ[ENV]
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _path(key: str) -> str:
    return os.path.join(store_dir(), key)


def has(key: str) -> bool:
    return key in _loaded or os.path.exists(_path(key))


def put(key: str, blob: bytes) -> None:
    """Store ``blob`` under ``key`` on this host (atomic write)."""
    path = _path(key)
    if os.path.exists(path):
        return
    fd, tmp = tempfile.mkstemp(dir=store_dir(), prefix='.tmp-')
    with os.fdopen(fd, 'wb') as f:
        f.write(blob)
    os.replace(tmp, path)


def get_blob(key: str) -> bytes:
    with open(_path(key), 'rb') as f:
        return f.read()


class tracking:
    """Context manager collecting the keys of Shared objects pickled inside it."""

    def __enter__(self) -> set:
        self.keys: set = set()
        self._outer = getattr(_tracking, 'keys', None)
        _tracking.keys = self.keys
        return self.keys

    def __exit__(self, *exc) -> None:
        _tracking.keys = self._outer


def _resolve(key: str) -> 'Shared':
    return Shared._from_key(key)


class Shared:
    """A large value used by many jobs and many runs, shipped once per host.

    Args:
        value: anything picklable (a numpy array, a list, a DataFrame...).

    ``value`` returns it, loading it on first use in a worker process.
    """

    __slots__ = ('_key', '_value', '_has_value')

    def __init__(self, value: Any):
        self._value = value
        self._has_value = True
        self._key: Optional[str] = None

    @classmethod
    def _from_key(cls, key: str) -> 'Shared':
        self = cls.__new__(cls)
        self._key = key
        self._has_value = key in _loaded
        self._value = _loaded.get(key)
        return self

    @property
    def key(self) -> str:
        """The content digest naming this value in every host's store."""
        if self._key is None:
            blob = pickle.dumps(self._value, _PROTOCOL)
            self._key = hashlib.sha256(blob).hexdigest()[:32]
            put(self._key, blob)
            _loaded[self._key] = self._value
        return self._key

    @property
    def value(self) -> Any:
        if not self._has_value:
            key = self._key
            if key not in _loaded:
                try:
                    blob = get_blob(key)
                except FileNotFoundError:
                    raise RuntimeError(
                        f'Shared value {key} is not in this host\'s store '
                        f'({store_dir()}). A Shared value reaches a host '
                        f'through job_stream\'s own messages; do not pass it '
                        f'to other tools\' processes.') from None
                _loaded[key] = pickle.loads(blob)
            self._value = _loaded[key]
            self._has_value = True
        return self._value

    def __reduce__(self):
        key = self.key
        keys = getattr(_tracking, 'keys', None)
        if keys is not None:
            keys.add(key)
        return (_resolve, (key,))

    def __repr__(self) -> str:
        return f'Shared({self.key[:8]})'
