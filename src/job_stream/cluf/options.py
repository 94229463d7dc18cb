"""cluf's options and where they come from.

Every option has one name, the long command-line name with ``_`` for ``-``
(``jobs_dir`` is ``--jobs-dir``).  Values come from, in decreasing
precedence: the command line, the ``cluf_options`` dict of the script, the
JSON rc file (``~/.clufrc``, or the file named by ``$CLUFRC``), then the
defaults below.  ``mode`` is only accepted on the command line.
"""
from __future__ import annotations

import json
import os
import shlex
from typing import Any, Dict, Optional

RC_ENV = 'CLUFRC'
RC_DEFAULT = '~/.clufrc'

# name: (default, help).  The command line in cli.py declares the same names.
OPTIONS: Dict[str, tuple] = {
    'target': ('target', 'name of the function to call'),
    'args': ('args', 'name of the iterable (or function returning one) of arguments'),
    'processes': (None, 'worker processes (default: all cores)'),
    'checkpoint': (None, 'checkpoint file of a direct run'),
    'checkpoint_interval': (None, 'seconds between checkpoints (default 600)'),
    'bins': (None, 'run only bins "x/y", e.g. "3/10" or "0-2,5/10"'),
    'hash': (None, 'bin by a stable hash of these arguments: "0-2,5,name"'),
    'key': (None, 'take the bin from this argument (position or name)'),
    'keep_going': (False, 'on a failing argument, keep running the others'),
    'nodes': (None, 'dispatch: number of subjobs'),
    'iterations': (None, 'dispatch: approximate arguments per subjob'),
    'jobs_dir': ('cluf_jobs', 'dispatch: folder of the subjob scripts and state'),
    'queue': (False, 'dispatch: submit the scripts (sbatch/qsub)'),
    'scheduler': (None, 'dispatch: slurm or pbs (default: detected, else slurm)'),
    'array': (False, 'dispatch: one SLURM job array instead of N scripts'),
    'max_array_size': (None, "dispatch: cap on array tasks (default: the "
                             "site's MaxArraySize)"),
    'fresh': (False, 'dispatch: forget which bins finished and run them all'),
    'env': ({}, 'dispatch: environment variables exported by the subjobs'),
    'prepend_script': ([], 'dispatch: files inlined before the run line'),
    'append_script': ([], 'dispatch: files inlined after the run line'),
    'prepend_statements': ([], 'dispatch: shell lines before the run line'),
    'append_statements': ([], 'dispatch: shell lines after the run line'),
    'slurm_options': ({}, 'dispatch: #SBATCH options (name, stdout, stderr, '
                          'ppn, time, mem, ...)'),
    'pbs_options': ({}, 'dispatch: #PBS options (name, stdout, stderr, ppn, '
                        'walltime, mem, queue, ...)'),
    'show_progress': (True, 'progress line on a terminal'),
    'report': (True, 'end-of-run statistics on stderr'),
}
CLI_ONLY = ('mode',)


class OptionError(ValueError):
    """An option has a bad name or value; the message says which and why."""


def normalize_keys(options: dict, source: str) -> dict:
    """Check the keys of a dict of options (``-`` accepted for ``_``)."""
    if not isinstance(options, dict):
        raise OptionError(f'{source} must be a dict of options, not '
                          f'{type(options).__name__}.')
    out = {}
    for key, value in options.items():
        name = str(key).replace('-', '_')
        if name in CLI_ONLY:
            raise OptionError(f'{source}: {key!r} is accepted only on the '
                              f'command line (--{name}).')
        if name not in OPTIONS:
            raise OptionError(
                f'{source}: unknown option {key!r}; valid options are: '
                f'{", ".join(sorted(OPTIONS))}.')
        out[name] = value
    return out


def read_rc() -> dict:
    """The options of the JSON rc file ($CLUFRC or ~/.clufrc), if any."""
    path = os.path.expanduser(os.environ.get(RC_ENV) or RC_DEFAULT)
    if not os.path.exists(path):
        if os.environ.get(RC_ENV):
            raise OptionError(f'${RC_ENV} names {path}, which does not exist.')
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise OptionError(f'cannot read the cluf rc file {path}: {e}; it must '
                          f'be a JSON object of options.') from None
    return normalize_keys(data, f'rc file {path}')


def merge(cli: dict, script: Optional[dict], rc: dict) -> dict:
    """All options, each from the first source that sets it."""
    script = normalize_keys(script or {}, 'cluf_options in the script')
    out = {}
    for name, (default, _) in OPTIONS.items():
        for source in (cli, script, rc):
            if source.get(name) is not None:
                out[name] = source[name]
                break
        else:
            out[name] = default
    return _coerce(out)


def _as_list(value: Any, name: str, split_commas: bool) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise OptionError(f'{name} must be a string or a list of strings, '
                          f'not {value!r}.')
    out = []
    for v in value:
        if split_commas:
            out.extend(p.strip() for p in str(v).split(',') if p.strip())
        else:
            out.append(str(v))
    return out


def parse_env(value: Any) -> Dict[str, str]:
    """``'A=1 B="x y"'`` (or a dict, or a list of such strings) -> dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        items = [(str(k), '' if v is None else str(v)) for k, v in value.items()]
    else:
        items = []
        for text in _as_list(value, 'env', False):
            for word in shlex.split(text):
                name, eq, val = word.partition('=')
                if not eq:
                    raise OptionError(f'env: {word!r} is not NAME=VALUE.')
                items.append((name, val))
    for name, _ in items:
        if not name.isidentifier():
            raise OptionError(f'env: {name!r} is not a valid environment '
                              f'variable name.')
    return dict(items)


def _positive_int(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value)
    else:
        n = 0
    if n < 1:
        raise OptionError(f'{name} must be a positive integer, not {value!r}.')
    return n


def _seconds(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds >= 0:
        raise OptionError(f'{name} must be a number of seconds >= 0, not '
                          f'{value!r}.')
    return seconds


def _coerce(o: dict) -> dict:
    for name in ('processes', 'nodes', 'iterations', 'max_array_size'):
        o[name] = _positive_int(o[name], name)
    o['checkpoint_interval'] = _seconds(o['checkpoint_interval'],
                                        'checkpoint_interval')
    for name in ('keep_going', 'queue', 'array', 'fresh', 'show_progress', 'report'):
        if not isinstance(o[name], bool):
            raise OptionError(f'{name} must be true or false, not {o[name]!r}.')
    o['env'] = parse_env(o['env'])
    for name in ('prepend_script', 'append_script'):
        o[name] = _as_list(o[name], name, True)
    for name in ('prepend_statements', 'append_statements'):
        o[name] = _as_list(o[name], name, False)
    for name in ('slurm_options', 'pbs_options'):
        if not isinstance(o[name], dict):
            raise OptionError(f'{name} must be a dict, not {o[name]!r}.')
    if o['scheduler'] is not None and o['scheduler'] not in ('slurm', 'pbs'):
        raise OptionError(f'scheduler must be "slurm" or "pbs", not '
                          f'{o["scheduler"]!r}.')
    for name in ('target', 'args'):
        if not isinstance(o[name], str) or not o[name].isidentifier():
            raise OptionError(f'{name} must be a Python name, not {o[name]!r}.')
    for name in ('bins', 'hash', 'key', 'checkpoint', 'jobs_dir'):
        if o[name] is not None:
            o[name] = str(o[name])
    return o
