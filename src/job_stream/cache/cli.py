"""The ``cache`` command: what a cache folder holds, why, and clearing it.

    job_stream cache show DIR              size and entries per stage
    job_stream cache explain DIR [STAGE]   what each stage's code key is made of,
                                           and what changed since the key before
    job_stream cache clear DIR [STAGE...]  delete stages (all without STAGE);
                                           --old-keys: only their older code keys

Until it is attached to the main command: ``python -m job_stream.cache ...``.
"""
from __future__ import annotations

import os
import time

import click

from ..records import runs
from . import store as _store


def _size(n: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB'):
        if n < 1024 or unit == 'GB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} TB'


def _check_dir(folder: str) -> None:
    if not os.path.isdir(folder):
        raise click.ClickException(f'No cache folder {folder!r}: it is created '
                                   f'by a run with cache={folder!r}.')


@click.group('cache')
def cache() -> None:
    """Inspect and clear the caches of memoized stages."""


@cache.command('show')
@click.argument('folder', type=click.Path(file_okay=False))
def show(folder: str) -> None:
    """Size and entries per stage of the cache FOLDER."""
    _check_dir(folder)
    rows = []
    for name, path in _store.stages(folder):
        keys = _store.keys(path)
        entries = sum(k['entries'] for k in keys)
        size = sum(k['bytes'] for k in keys)
        used = time.strftime('%Y-%m-%d %H:%M', time.localtime(keys[-1]['used'])) \
            if keys else ''
        rows.append((name, str(entries), _size(size), str(len(keys)), used))
    if not rows:
        click.echo(f'{folder}: empty')
        return
    head = ('stage', 'entries', 'size', 'code keys', 'last used')
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for row in [head] + rows:
        click.echo('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@cache.command('explain')
@click.argument('folder', type=click.Path(file_okay=False))
@click.argument('stage', required=False)
def explain(folder: str, stage: str) -> None:
    """What each stage's latest code key is made of (code, helpers,
    constants, libraries, Python version, depends=), and what differs from
    the key used before it."""
    _check_dir(folder)
    found = False
    for name, path in _store.stages(folder):
        if stage is not None and name not in (stage, _store.stage_dirname(stage)):
            continue
        found = True
        keys = [k for k in _store.keys(path) if k['manifest']]
        if not keys:
            continue
        latest = keys[-1]
        comps = [tuple(c) for c in latest['manifest']['components']]
        click.echo(f"stage {latest['manifest']['stage']}: key {latest['key']} "
                   f"({latest['entries']} entries, {len(keys)} key(s) kept)")
        for kind, what, value in comps:
            click.echo(f'  {kind:<8} {what}  {value}')
        if len(keys) > 1:
            before = {tuple(c) for c in keys[-2]['manifest']['components']}
            now = set(comps)
            click.echo(f"  changed since key {keys[-2]['key']}:")
            for kind, what, value in sorted(now - before):
                click.echo(f'    + {kind} {what}  {value}')
            for kind, what, value in sorted(before - now):
                click.echo(f'    - {kind} {what}  {value}')
    if stage is not None and not found:
        raise click.ClickException(f'No stage {stage!r} in {folder}; see '
                                   f'"cache show {folder}".')


@cache.command('clear')
@click.argument('folder', type=click.Path(file_okay=False))
@click.argument('stages', nargs=-1)
@click.option('--old-keys', is_flag=True,
              help='Only delete the entries of older code keys, keeping '
                   'each stage\'s most recently used one.')
def clear(folder: str, stages: tuple, old_keys: bool) -> None:
    """Delete the cached results of STAGES (all stages if none given)."""
    _check_dir(folder)
    if old_keys:
        n = sum(_store.prune(folder, name) for name in stages) if stages \
            else _store.prune(folder)
        click.echo(f'deleted {n} old code key(s) from {folder}')
        return
    if not stages:
        n = _store.clear(folder)
        click.echo(f'cleared {n} stage(s) from {folder}')
        return
    for name in stages:
        if not _store.clear(folder, name):
            raise click.ClickException(f'No stage {name!r} in {folder}; see '
                                       f'"cache show {folder}".')
        click.echo(f'cleared {name}')


@click.group()
def main() -> None:
    """job_stream's cache and run-record commands (standalone entry point)."""


main.add_command(show)
main.add_command(explain)
main.add_command(clear)
main.add_command(runs)
