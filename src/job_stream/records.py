"""Run records: one JSON line per run, appended to a file, and a reader.

A run writes a record when it is given ``record=PATH`` (``Work``,
``common.run``, ``map``) or when the ``JOBS_RECORD`` environment variable
names a file.  A record holds::

    {"start": "2026-11-22T01:50:00", "end": "...", "seconds": 3.2,
     "script": "/home/me/fit.py", "args": ["--alpha", "2"], "cwd": "...",
     "hosts": ["myhost"], "stages": [{"name": "square", "items": 100,
     "hits": 40, "seconds": 1.5}], "cache_hits": 40, "checkpoint": null,
     "status": "ok", "error": null}

``status`` is ``ok``, ``failed`` (``error`` says why) or ``interrupted``.
Each record is written with one ``write`` on a file opened for appending,
so runs finishing at the same time do not interleave their lines.

Read them with ``python -m job_stream.records [PATH] [-n 10]`` (or the
``job_stream runs`` command), or :func:`read` in Python.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from typing import Any, Optional

import click

ENV = 'JOBS_RECORD'


def record_path(option: Any = None) -> Optional[str]:
    """The file a run records to: the option, else ``$JOBS_RECORD``."""
    path = option if option else os.environ.get(ENV)
    return os.path.abspath(os.fspath(path)) if path else None


class Recorder:
    """Collects one run's record; :meth:`write` appends it."""

    def __init__(self, path: str, checkpoint: Optional[str] = None):
        self.path = path
        self._t0 = time.perf_counter()
        self.data = {
            'start': _now(), 'end': None, 'seconds': None,
            'script': os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0]
            else None,
            'args': list(sys.argv[1:]), 'cwd': os.getcwd(),
            'hosts': [socket.gethostname()], 'stages': [], 'cache_hits': 0,
            'checkpoint': checkpoint, 'status': 'running', 'error': None,
        }

    def finish(self, stats, hosts: list, error: Optional[BaseException]) -> None:
        d = self.data
        d['end'] = _now()
        d['seconds'] = round(time.perf_counter() - self._t0, 3)
        if hosts:
            d['hosts'] = sorted({h.name for h in hosts})
        d['stages'] = [{'name': n, 'items': i, 'hits': h, 'seconds': round(s, 4)}
                       for n, i, h, s in stats.stage_rows()]
        d['cache_hits'] = sum(s['hits'] for s in d['stages'])
        if error is None:
            d['status'] = 'ok'
        elif isinstance(error, (KeyboardInterrupt, SystemExit)):
            d['status'], d['error'] = 'interrupted', type(error).__name__
        else:
            d['status'] = 'failed'
            d['error'] = f'{type(error).__name__}: {error}'.splitlines()[0][:500]

    def write(self) -> None:
        line = (json.dumps(self.data, default=str) + '\n').encode()
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec='seconds')


def read(path: str) -> list:
    """All records of a file, oldest first; unreadable lines are skipped."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def table(records: list) -> str:
    """The records as a text table, one row per run."""
    head = ['start', 'seconds', 'status', 'items', 'hits', 'script', 'args']
    rows = []
    for r in records:
        stages = r.get('stages') or []
        rows.append([
            str(r.get('start') or ''),
            f"{r['seconds']:.1f}" if isinstance(r.get('seconds'), (int, float))
            else '',
            str(r.get('status') or ''),
            str(sum(s.get('items', 0) for s in stages)),
            str(r.get('cache_hits', 0)),
            os.path.basename(str(r.get('script') or '')),
            ' '.join(map(str, r.get('args') or []))[:40],
        ])
    widths = [max([len(h)] + [len(row[i]) for row in rows])
              for i, h in enumerate(head)]
    lines = ['  '.join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    for row in rows:
        lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return '\n'.join(lines)


@click.command('runs')
@click.argument('path', required=False, type=click.Path(dir_okay=False))
@click.option('-n', '--last', default=10, show_default=True,
              help='How many of the latest runs to show.')
@click.option('--stages', 'show_stages', is_flag=True,
              help='Also show each run\'s stages (items, hits, seconds).')
def runs(path: Optional[str], last: int, show_stages: bool) -> None:
    """Show the last runs recorded in PATH (default: $JOBS_RECORD)."""
    path = path or os.environ.get(ENV)
    if not path:
        raise click.UsageError(f'Give the record file, or set {ENV}.')
    if not os.path.exists(path):
        raise click.ClickException(f'No run record file {path!r}: runs write '
                                   f'one with record=PATH or ${ENV}.')
    records = read(path)[-last:] if last > 0 else read(path)
    click.echo(table(records))
    if show_stages:
        for r in records:
            click.echo(f"\n{r.get('start')} {os.path.basename(str(r.get('script')))}")
            for s in r.get('stages') or []:
                click.echo(f"  {s['name']}: {s['items']} items, {s['hits']} "
                           f"cache hits, {s['seconds']:.3f}s")


if __name__ == '__main__':
    runs()
