"""Per-bin state markers in a jobs folder: what is done, running or failed.

A subjob (a direct run given ``--jobs-dir``) marks each of its bins
``running`` when it starts and ``done`` or ``failed`` when it ends, as small
JSON files ``JOBS_DIR/state/bin-<b>.<status>``.  A new dispatch into the same
folder skips the bins that are done; ``cluf status JOBS_DIR`` reads them.
``state/shape.json`` records how arguments were binned, since markers mean
nothing for another binning.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Dict, Iterable, Optional

from .options import OptionError

STATUSES = ('done', 'failed', 'running')


def _state_dir(jobs_dir: str) -> str:
    return os.path.join(jobs_dir, 'state')


def write_json(path: str, data) -> None:
    """Write atomically: a reader sees the old file or the new one."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_shape(jobs_dir: str, shape: dict, fresh: bool) -> None:
    """Record the binning; refuse markers written for another binning."""
    os.makedirs(_state_dir(jobs_dir), exist_ok=True)
    path = os.path.join(_state_dir(jobs_dir), 'shape.json')
    old = read_json(path)
    if fresh:
        clear(jobs_dir)
    elif old is not None and old != shape:
        diff = ', '.join(f'{k} was {old.get(k)!r}, now {shape.get(k)!r}'
                         for k in sorted(set(old) | set(shape))
                         if old.get(k) != shape.get(k))
        raise OptionError(
            f'The jobs folder {jobs_dir} holds bins of another run ({diff}): '
            f'use another --jobs-dir, or --fresh to forget its finished bins.')
    write_json(path, shape)


def clear(jobs_dir: str) -> None:
    d = _state_dir(jobs_dir)
    for name in os.listdir(d) if os.path.isdir(d) else ():
        if name.startswith('bin-'):
            os.unlink(os.path.join(d, name))


def mark(jobs_dir: str, bins: Iterable[int], status: str,
         message: Optional[str] = None) -> None:
    info = {'status': status, 'host': socket.gethostname(), 'pid': os.getpid(),
            'time': time.time(),
            'job': os.environ.get('SLURM_JOB_ID') or os.environ.get('PBS_JOBID'),
            'message': message}
    d = _state_dir(jobs_dir)
    os.makedirs(d, exist_ok=True)
    for b in bins:
        write_json(os.path.join(d, f'bin-{b}.{status}'), info)
        for other in STATUSES:
            if other != status:
                try:
                    os.unlink(os.path.join(d, f'bin-{b}.{other}'))
                except FileNotFoundError:
                    pass


def read(jobs_dir: str) -> Dict[int, dict]:
    """bin -> its marker (with 'status'); bins never started are absent."""
    d = _state_dir(jobs_dir)
    out: Dict[int, dict] = {}
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        stem, _, status = name.rpartition('.')
        if not stem.startswith('bin-') or status not in STATUSES:
            continue
        try:
            b = int(stem[4:])
        except ValueError:
            continue
        info = read_json(os.path.join(d, name)) or {}
        info['status'] = status
        # done wins over a stale marker left by a killed earlier attempt
        if b not in out or STATUSES.index(status) < STATUSES.index(out[b]['status']):
            out[b] = info
    return out


def done_bins(jobs_dir: str) -> set:
    return {b for b, info in read(jobs_dir).items() if info['status'] == 'done'}
