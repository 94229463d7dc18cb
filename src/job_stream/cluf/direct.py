"""Direct mode: call the script's ``target`` on its ``args`` on local cores.

The arguments are read lazily from the script's iterable (a generator is
never held whole), filtered to the selected bins, and run through
:class:`job_stream.inline.Work` like any other pipeline: one job, whose only
results are the failing arguments.  A failing argument stops the run (the
default) or, with ``keep_going``, is kept as a result (checkpointed with the
run's state) and summarized at the end.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import traceback
from typing import Iterable, Optional

import cloudpickle

from ..errors import short_repr
from ..inline import Work
from . import state
from .bins import call_parts, format_bins, make_binner, parse_bins

# Failures printed with their whole traceback at the end of a run; the rest
# get one line each, so a systematic failure does not bury the summary.
FULL_TRACEBACKS = 5


# Variables through which a scheduler says how many cores a job was given,
# in the order they are trusted.
SCHEDULER_CPU_VARIABLES = ('SLURM_CPUS_PER_TASK', 'SLURM_CPUS_ON_NODE',
                           'PBS_NUM_PPN', 'NCPUS')


def default_processes(environ=os.environ) -> Optional[int]:
    """Inside a SLURM/PBS job, the cores it was given (a job should not
    start a worker per core of a node it shares); else None: all cores."""
    for name in SCHEDULER_CPU_VARIABLES:
        value = environ.get(name, '').strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's walltime, preemption or scancel)."""


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated`, so the run stops its workers
    and marks its bins failed instead of vanishing with them 'running'."""
    def handler(signum, frame):
        raise Terminated('killed by SIGTERM (walltime, preemption or a cancel)')
    signal.signal(signal.SIGTERM, handler)


class ScriptError(ValueError):
    """The script cannot be loaded or lacks what cluf calls."""


def load_script(path: str):
    """Import ``path`` as a module (its ``__name__`` is not '__main__')."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ScriptError(f'{path}: no such script.')
    folder = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else '_cluf_script'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # as `python script.py` would: the script's folder is importable, here
    # and in the worker processes started later
    sys.path.insert(0, folder)
    os.environ['PYTHONPATH'] = os.pathsep.join(
        p for p in (folder, os.environ.get('PYTHONPATH')) if p)
    spec.loader.exec_module(module)
    # workers receive the target by value; they cannot import the script
    cloudpickle.register_pickle_by_value(module)
    return module


def _public(module, want_callable: bool) -> list:
    names = []
    for n, v in vars(module).items():
        if n.startswith('_') or type(v).__name__ == 'module' or n == 'cluf_options':
            continue
        if want_callable and callable(v) and not isinstance(v, type):
            names.append(n)
        elif not want_callable and not callable(v) and hasattr(v, '__iter__') \
                and not isinstance(v, (str, bytes)):
            names.append(n)
    return names


def find_target(module, name: str):
    target = getattr(module, name, None)
    if target is None:
        have = _public(module, True)
        where = f'it defines {", ".join(have)}' if have else 'it defines no function'
        raise ScriptError(
            f'{module.__file__} has no {name!r} to call ({where}): name the '
            f'function `{name}`, or pass --target NAME.')
    if not callable(target):
        raise ScriptError(f'{module.__file__}: {name!r} is a '
                          f'{type(target).__name__}, not a function to call.')
    return target


def find_args(module, name: str) -> Iterable:
    """The script's arguments, as an iterator (never materialized)."""
    args = getattr(module, name, None)
    if args is None:
        have = _public(module, False)
        where = (f'it defines the iterables {", ".join(have)}' if have
                 else 'it defines no iterable')
        raise ScriptError(
            f'{module.__file__} has no {name!r} of arguments ({where}): define '
            f'`{name}` as an iterable (or a function returning one), or pass '
            f'--args NAME.')
    if callable(args):
        args = args()
    try:
        return iter(args)
    except TypeError:
        raise ScriptError(f'{module.__file__}: {name!r} is a '
                          f'{type(args).__name__}, not an iterable of '
                          f'arguments.') from None


class Failure:
    """A failing argument, as returned by the job with ``keep_going``."""

    def __init__(self, position: int, bin: int, value: str, tb: str):
        self.position, self.bin, self.value, self.traceback = position, bin, value, tb


class CallTarget:
    """The job of a direct run: ``(position, bin, value) -> target(value)``."""

    def __init__(self, target, keep_going: bool):
        self.target = target
        self.keep_going = keep_going
        self.__qualname__ = getattr(target, '__qualname__', 'target')

    def __call__(self, item):
        position, bin, value = item
        args, kwargs = call_parts(value)
        try:
            self.target(*args, **kwargs)
        except Exception as e:
            if not self.keep_going:
                e.add_note(f'cluf: argument #{position} (bin {bin}): '
                           f'{short_repr(value)}')
                raise
            tb = traceback.format_exc()
            # said at once, from the worker (stderr reaches the terminal)
            print(f'cluf: argument #{position} (bin {bin}) failed: '
                  f'{tb.strip().splitlines()[-1]}', file=sys.stderr, flush=True)
            return Failure(position, bin, short_repr(value), tb)
        return None


def _select(values: Iterable, binner, bins: Optional[frozenset], counts: dict):
    for position, value in enumerate(values):
        b = binner(position, value)
        if bins is None or b in bins:
            counts[b] = counts.get(b, 0) + 1
            yield position, b, value


def run_direct(module, opts: dict, record_dir: Optional[str] = None,
               out=sys.stderr) -> int:
    """Run the selected bins; returns the exit status (0: all succeeded)."""
    target = find_target(module, opts['target'])
    if opts['bins'] is not None:
        bins, total = parse_bins(opts['bins'])
    else:
        bins, total = None, 1
    binner = make_binner(total, opts['hash'], opts['key'])
    run_options = {'showProgress': opts['show_progress'], 'report': opts['report']}
    processes = opts['processes'] or default_processes()
    if processes:
        run_options['processes'] = processes
    if opts['checkpoint']:
        run_options['checkpointFile'] = opts['checkpoint']
    if opts['checkpoint_interval'] is not None:
        run_options['checkpointInterval'] = opts['checkpoint_interval']
    mine = set(bins) if bins is not None else {0}
    if record_dir is not None:
        state.check_shape(record_dir, shape(module, opts, total), opts['fresh'])
        finished = state.done_bins(record_dir) & mine
        if finished:
            print(f'cluf: bins {format_bins(finished, total)} already done in '
                  f'{record_dir}; skipping them.', file=out, flush=True)
            mine -= finished
            if not mine:
                return 0
            bins = frozenset(mine)
        if opts['checkpoint']:
            _forget_checkpoint(opts['checkpoint'], mine, total, opts['fresh'], out)
        state.mark(record_dir, mine, 'running')
    counts: dict = {}
    items = _select(find_args(module, opts['args']), binner, bins, counts)
    try:
        # Failures are the run's results, not a result handler's side
        # effect: results are checkpointed state, so failures from before a
        # resume still reach the summary (exactly once).
        w = Work(items, **run_options)
        w.job(CallTarget(target, opts['keep_going']))
        failures = w.run() or []
    except BaseException as e:
        if record_dir is not None:
            state.mark(record_dir, mine, 'failed',
                       f'{type(e).__name__}: {e}'.splitlines()[0])
        raise
    if record_dir is not None:
        bad = {f.bin for f in failures}
        state.mark(record_dir, mine - bad, 'done')
        for b in bad:
            mine_failed = [f for f in failures if f.bin == b]
            first = mine_failed[0]
            state.mark(record_dir, [b], 'failed',
                       f'{len(mine_failed)} failing argument(s), first #{first.position} '
                       f'{first.value}: {first.traceback.strip().splitlines()[-1]}')
    if failures:
        _summarize(failures, sum(counts.values()), out)
        return 1
    return 0


def _forget_checkpoint(path: str, bins: set, total: int, fresh: bool,
                       out) -> None:
    """Before bins of a jobs folder run: with ``fresh`` their checkpoint is
    forgotten too.  Else the folder says these bins are not done, so a
    ``.done`` marker of their checkpoint is from an attempt that finished
    with failing arguments (or was killed before marking its bins): it is
    stale, and would refuse the run."""
    stale = [path, path + '.journal', path + '.done'] if fresh else [path + '.done']
    why = '--fresh' if fresh else 'the jobs folder says they are not done'
    for p in stale:
        if os.path.exists(p):
            print(f'cluf: removing {p}: bins {format_bins(bins, total)} run '
                  f'again ({why}).', file=out, flush=True)
            os.unlink(p)


def shape(module, opts: dict, total: int) -> dict:
    return {'script': os.path.abspath(module.__file__), 'bins': total,
            'hash': opts['hash'], 'key': opts['key'], 'target': opts['target'],
            'args': opts['args']}


def _summarize(failures: list, ran: int, out) -> None:
    failures.sort(key=lambda f: f.position)
    print(f'\ncluf: {len(failures)} of {ran} arguments failed:', file=out)
    for i, f in enumerate(failures):
        print(f'--- argument #{f.position} (bin {f.bin}): {f.value}', file=out)
        if i < FULL_TRACEBACKS:
            print(f.traceback.rstrip(), file=out)
        else:
            print('    ' + f.traceback.strip().splitlines()[-1], file=out)
    out.flush()
