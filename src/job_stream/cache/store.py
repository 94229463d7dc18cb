"""Where cached results live: one file per (stage, code key, input).

Layout of a cache folder::

    DIR/<stage>/<code key>/manifest.json      what the code key is made of
    DIR/<stage>/<code key>/<ab>/<input hash>  one entry per input

An entry is ``MAGIC + blake2b(payload) + payload`` where the payload is the
pickled return value of the job.  Writes go to a temporary file in the same
folder and are renamed into place (atomic on POSIX filesystems, NFS and
Lustre included), so concurrent workers - processes or MPI ranks sharing a
filesystem - never see half an entry; two writers of the same entry write
the same value and the last rename wins.  An entry that fails its checksum
or does not unpickle is reported with a :class:`CacheWarning`, treated as a
miss, and rewritten.

Inputs are hashed with :func:`joblib.hash` (fast for numpy arrays).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import time
import uuid
import warnings
from typing import Any, Iterator, Tuple

import joblib

MAGIC = b'JSC1'
_DIGEST = 16
_HEADER = len(MAGIC) + _DIGEST
_MISSING = object()


class CacheWarning(UserWarning):
    """A cache entry could not be read or written; the job ran instead."""


def hash_input(work: Any) -> str:
    """The hash of one input (32 hex characters)."""
    return joblib.hash(work)


def stage_dirname(name: str) -> str:
    """The folder name of a stage: its name, made safe for filesystems."""
    safe = re.sub(r'[^\w.-]+', '_', name).strip('_.') or 'stage'
    return safe[:100]


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST).digest()


class Store:
    """The entries of one stage under one code key."""

    def __init__(self, root: str, stage: str, key: str, components=None):
        self.root = root
        self.stage = stage
        self.key = key
        self.path = os.path.join(root, stage_dirname(stage), key)
        self._made: set = set()
        self._warned_pickle = False
        if components is not None:
            self.write_manifest(components)

    def write_manifest(self, components) -> None:
        data = json.dumps({'stage': self.stage, 'key': self.key,
                           'created': time.time(),
                           'components': [list(c) for c in components]},
                          indent=1).encode()
        os.makedirs(self.path, exist_ok=True)
        target = os.path.join(self.path, 'manifest.json')
        if os.path.exists(target):
            os.utime(target)  # most recently used key
            return
        _atomic_write(target, data)

    def entry_path(self, digest: str) -> str:
        return os.path.join(self.path, digest[:2], digest)

    def get(self, digest: str) -> Any:
        """The stored value, or :data:`MISSING` (absent or corrupt)."""
        path = self.entry_path(digest)
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            return _MISSING
        except OSError as e:
            warnings.warn(CacheWarning(f'cache entry {path} unreadable ({e}); '
                                       f'running the job instead'))
            return _MISSING
        payload = data[_HEADER:]
        if data[:len(MAGIC)] != MAGIC or data[len(MAGIC):_HEADER] != _checksum(payload):
            warnings.warn(CacheWarning(
                f'cache entry {path} is corrupt (truncated or overwritten); '
                f'running the job again and rewriting it'))
            return _MISSING
        try:
            return pickle.loads(payload)
        except Exception as e:
            warnings.warn(CacheWarning(
                f'cache entry {path} does not load ({type(e).__name__}: {e}); '
                f'running the job again and rewriting it'))
            return _MISSING

    def put(self, digest: str, value: Any) -> None:
        """Store ``value`` atomically; unpicklable values are not stored."""
        try:
            payload = pickle.dumps(value, protocol=5)
        except Exception:
            try:
                import cloudpickle
                payload = cloudpickle.dumps(value, protocol=5)
            except Exception as e:
                if not self._warned_pickle:
                    self._warned_pickle = True
                    warnings.warn(CacheWarning(
                        f'stage {self.stage!r} returned a value that cannot be '
                        f'pickled ({e}); it is not cached'))
                return
        sub = digest[:2]
        if sub not in self._made:
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
            self._made.add(sub)
        try:
            _atomic_write(self.entry_path(digest),
                          MAGIC + _checksum(payload) + payload)
        except OSError as e:
            warnings.warn(CacheWarning(f'cannot write cache entry for stage '
                                       f'{self.stage!r}: {e}'))


MISSING = _MISSING


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f'{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- inspecting a cache folder (the command line) ---------------------------
def stages(root: str) -> Iterator[Tuple[str, str]]:
    """``(stage folder, path)`` for each stage of a cache folder."""
    if not os.path.isdir(root):
        return
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            yield name, path


def keys(stage_path: str) -> list:
    """The code keys of a stage, most recently used last, as dicts with
    ``key``, ``path``, ``manifest`` (or None), ``entries``, ``bytes``."""
    out = []
    for key in os.listdir(stage_path):
        path = os.path.join(stage_path, key)
        if not os.path.isdir(path):
            continue
        manifest, used = None, os.path.getmtime(path)
        mpath = os.path.join(path, 'manifest.json')
        try:
            with open(mpath) as f:
                manifest = json.load(f)
            used = os.path.getmtime(mpath)
        except (OSError, ValueError):
            pass
        entries = size = 0
        for dirpath, _, files in os.walk(path):
            for name in files:
                if name == 'manifest.json' or name.endswith('.tmp'):
                    continue
                entries += 1
                try:
                    size += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    pass
        out.append({'key': key, 'path': path, 'manifest': manifest,
                    'entries': entries, 'bytes': size, 'used': used})
    out.sort(key=lambda k: k['used'])
    return out


def clear(root: str, stage: str = None) -> int:
    """Delete all stages, or one (by name or folder name); return how many."""
    removed = 0
    for name, path in list(stages(root)):
        if stage is None or name in (stage, stage_dirname(stage)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def prune(root: str, stage: str = None) -> int:
    """Delete every code key but the most recently used one, of all stages
    or one; return how many keys were deleted."""
    removed = 0
    for name, path in list(stages(root)):
        if stage is None or name in (stage, stage_dirname(stage)):
            for key in keys(path)[:-1]:
                shutil.rmtree(key['path'], ignore_errors=True)
                removed += 1
    return removed
