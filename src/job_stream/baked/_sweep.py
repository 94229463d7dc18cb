"""``sweep``: a stochastic experiment over a grid of parameters.

The pipeline ``sweep`` builds around the user's stages is::

    combination frame      one per parameter combination; its store is an
    |                      AdaptiveTrials deciding how many trials to run
    +- trial frame         one per trial; checks the trial gave one dict
       +- user's stages    first job called as f(id, trial, **params)

Both frames run on the primary process (they are bookkeeping); the user's
jobs run on the workers.  Trials are recurred into the combination frame as
results arrive, so a combination needing more trials starts them without
waiting for its other trials (no lockstep).  When every combination is
finished the table of means is printed, and written to CSV and plotted on
request.  See docs/sweep.md.
"""
from __future__ import annotations

import itertools
import math
import numbers
import random
import sys
import time
import warnings
from typing import Any, Callable, Optional

from .. import inline as _inline
from ..errors import ConfigurationError
from ..inline import Work, _name
from ..objects import Args, Multiple, Object
from .trials import AdaptiveTrials, Criterion, first_batch

__all__ = ['sweep', 'trialRng', 'trialSeed']

TRIALS_PARMS = ('E', 'eps', 'min', 'max')
NOT_A_DICT = ("Result from sweep()'s pipeline must be a single dict (cannot "
              "emit Multiple either)")
# Stage names in messages.
COMBINATION_FRAME = 'sweep (frame of a parameter combination)'
TRIAL_FRAME = 'sweep (frame of one trial)'
# Seconds between two plain progress lines (stderr not a terminal).
PLAIN_PROGRESS_SECONDS = 5.0


def sweep(variables: Any = {}, trials: int = 0, output: Optional[str] = None,
          trialsParms: dict = {}, showProgress: bool = True, *,
          confidence: float = 0.95, plot: Optional[str] = None,
          seed: Optional[int] = None, **workKwargs: Any) -> '_SweepWork':
    """Run the stages declared in the ``with`` block for every combination of
    ``variables``, repeating each until its means are known well enough.

    Args:
        variables: ``{name: values}`` (every combination is tried) or a list
            of dicts with the same keys (exactly those combinations).
            Combination ``i`` (in that order) gets ``id == i``.
        trials: ``> 0``: exactly that many trials per combination; ``0``:
            automatic (see ``trialsParms``); ``< 0``: automatic with at most
            ``abs(trials)``.
        output: path of a CSV file to write the table to.
        trialsParms: automatic mode's criterion: ``E`` (relative half-width,
            default 0.1), ``eps`` (absolute half-width, default 1e-2),
            ``min`` (default 3) and ``max`` (default 10000) trials.
        showProgress: progress on stderr (a bar on a terminal, plain lines
            otherwise).
        confidence: of the reported half-widths (``*_err``), default 0.95.
        plot: path of a figure (any format matplotlib writes, by extension)
            of each value against each parameter, with ``*_err`` error bars.
        seed: makes the sweep reproducible: trial ``t`` of combination ``i``
            draws from a seed derived from ``(seed, i, t)``.
        **workKwargs: options of the run, as for :class:`job_stream.inline.Work`
            (``useMultiprocessing``, ``processes``, ``maxAttempts``, ``report``).

    The first job declared in the block is called as ``f(id, trial, **params)``
    with Python's ``random`` and ``numpy.random`` seeded for that trial (and
    :func:`trialRng` / :func:`trialSeed` available); the stages must produce
    exactly one dict of numbers per trial.  After the block, ``w.table`` is
    the table (a pandas DataFrame indexed by ``id``).
    """
    if isinstance(variables, dict):
        names = sorted(variables)
        values = [_as_values(name, variables[name]) for name in names]
        combos = [dict(zip(names, c)) for c in itertools.product(*values)]
    elif isinstance(variables, (list, tuple)):
        combos = []
        for i, c in enumerate(variables):
            if not isinstance(c, dict):
                raise ValueError(f'variables is a list, so each member must be '
                                 f'a dict of parameters; member {i} is {c!r}')
            if combos and set(c) != set(combos[0]):
                raise ValueError(
                    f'All dicts in variables must have same keys; found '
                    f'{set(c)} against {set(combos[0])}')
            combos.append(dict(c))
        if not combos:
            raise ValueError('variables is an empty list: nothing to sweep')
    else:
        raise ValueError(f'variables must be a dict {{name: values}} or a list '
                         f'of dicts, not {type(variables).__name__}')
    for name in (combos[0] if combos else ()):
        if name in ('id', 'trial', 'trials'):
            raise ValueError(f'{name!r} cannot be a parameter name: sweep '
                             f'uses it (the job is called f(id, trial, **params))')
    if isinstance(trials, numbers.Integral) and not isinstance(trials, bool):
        trials = int(trials)
    if isinstance(trials, bool) or not isinstance(trials, int):
        raise ValueError(f'trials must be an int (> 0: exactly that many, 0: '
                         f'automatic, < 0: automatic with at most -trials); '
                         f'got {trials!r}')
    if output is not None and not isinstance(output, str):
        raise ValueError(f'output must be a path (a string), not {output!r}')
    if plot is not None and not isinstance(plot, str):
        raise ValueError(f'plot must be a path (a string), not {plot!r}')
    if not isinstance(showProgress, bool):
        raise ValueError(f'showProgress must be True or False, not {showProgress!r}')
    if (isinstance(confidence, bool) or not isinstance(confidence, numbers.Real)
            or not 0 < confidence < 1):
        raise ValueError(f'confidence must be a float between 0 and 1 '
                         f'(e.g. 0.95), not {confidence!r}')
    confidence = float(confidence)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or seed < 0):
        raise ValueError(f'seed must be a non-negative int, not {seed!r}')
    criterion = _criterion(trials, trialsParms, confidence)
    return _SweepWork(combos, criterion, output, plot, showProgress, seed,
                      workKwargs)


def _as_values(name: str, values: Any) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, '__iter__'):
        raise ValueError(f'variables[{name!r}] must be a list of values to '
                         f'try, not {values!r} (use [{values!r}] for one value)')
    values = list(values)
    if not values:
        raise ValueError(f'variables[{name!r}] is empty: nothing to sweep')
    return values


def _criterion(trials: int, parms: dict, confidence: float) -> Criterion:
    if not isinstance(parms, dict):
        raise ValueError(f'trialsParms must be a dict, not {parms!r}')
    unknown = sorted(set(parms) - set(TRIALS_PARMS))
    if unknown:
        raise ValueError(f'Unknown trialsParms key {unknown[0]!r}; the keys '
                         f'are: {", ".join(TRIALS_PARMS)}')
    if 'min' in parms and trials > 0:
        raise ValueError(f"trialsParms 'min' cannot be used with trials="
                         f"{trials} (a fixed number of trials)")
    if 'max' in parms and trials != 0:
        raise ValueError(f"trialsParms 'max' cannot be used with trials="
                         f"{trials}: trials < 0 already sets the maximum to "
                         f"-trials, trials > 0 is a fixed number")
    for key in ('E', 'eps'):
        v = parms.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0:
            raise ValueError(f'trialsParms {key!r} must be a number >= 0, '
                             f'not {v!r}')
    for key in ('min', 'max'):
        v = parms.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f'trialsParms {key!r} must be an int >= 1, not {v!r}')
    parms = {k: int(v) if k in ('min', 'max') else float(v)
             for k, v in parms.items()}
    E, eps = parms.get('E', 0.1), parms.get('eps', 1e-2)
    if E == 0 and eps == 0:
        raise ValueError("trialsParms 'E' and 'eps' cannot both be 0: the "
                         "criterion could never be met")
    if trials > 0:
        return Criterion(E, eps, min=trials, max=trials,
                         confidence=confidence, fixed=trials)
    maximum = parms.get('max', 10000) if trials == 0 else -trials
    if 'min' in parms:
        minimum = parms['min']
        if minimum > maximum:
            raise ValueError(f"trialsParms 'min' ({minimum}) is greater than "
                             f"the maximum number of trials ({maximum})")
        if minimum < 2:
            raise ValueError("trialsParms 'min' must be at least 2: a "
                             "deviation needs two trials")
    else:
        minimum = min(3, maximum)
    return Criterion(E, eps, min=minimum, max=maximum, confidence=confidence)


# -- randomness of a trial ---------------------------------------------------
_current: Optional[Object] = None


class _SeededTrial:
    """The user's first job, called with the trial's random state set up."""

    def __init__(self, func: Callable, seed: Optional[int]):
        self.func = func
        self.seed = seed
        self.__qualname__ = _name(func)

    def __call__(self, *args, **kwargs):
        global _current
        if len(args) == 1 and not kwargs and type(args[0]) is Args:
            args, kwargs = args[0].args, args[0].kwargs
        import numpy as np
        if self.seed is None:
            seq = np.random.SeedSequence()    # fresh OS entropy per trial
        else:
            seq = np.random.SeedSequence(self.seed, spawn_key=tuple(args[:2]))
        # Separate words for the two Mersenne Twisters: seeded from the same
        # words they would draw the same numbers.
        state = seq.generate_state(8)
        random.seed(int.from_bytes(state[:4].tobytes(), 'little'))
        np.random.seed(state[4:])
        _current = Object(seq=seq, rng=None)
        try:
            return self.func(*args, **kwargs)
        finally:
            _current = None


def trialRng():
    """The ``numpy.random.Generator`` of the running trial (call it in the
    sweep's first job; the same generator is returned within one trial)."""
    if _current is None:
        raise RuntimeError('trialRng() is only available in the first job of '
                           'a sweep, while it handles a trial')
    if _current.rng is None:
        import numpy as np
        _current.rng = np.random.Generator(np.random.PCG64(_current.seq))
    return _current.rng


def trialSeed() -> int:
    """A 64-bit integer seed for the running trial, for libraries that want
    one (derived from ``(seed, id, trial)`` when the sweep has a ``seed``)."""
    if _current is None:
        raise RuntimeError('trialSeed() is only available in the first job of '
                           'a sweep, while it handles a trial')
    return int(_current.seq.generate_state(1, dtype='uint64')[0])


# -- the pipeline ----------------------------------------------------------
class _SweepWork(Work):
    """The ``Work`` a sweep yields; see :func:`sweep`."""

    def __init__(self, combos: list, criterion: Criterion, output, plot,
                 show_progress: bool, seed, work_kwargs: dict):
        work_kwargs = dict(work_kwargs)
        work_kwargs.setdefault('showProgress', False)
        super().__init__([Args(i, c) for i, c in enumerate(combos)], **work_kwargs)
        self.table = None
        self._combos = combos
        self._params = sorted(combos[0]) if combos else []
        self._criterion = criterion
        self._output, self._plot, self._seed = output, plot, seed
        self._show_progress = show_progress
        self._first = criterion.min
        self._progress: Optional[_Progress] = None
        self._seeded = False
        self.frame(_named(self._combination_start, COMBINATION_FRAME),
                   store=Object, emit=self._combination_emit)
        self.frame(_named(self._trial_start, TRIAL_FRAME), store=Object,
                   emit=self._trial_emit)

    # -- what the user may declare ---------------------------------------
    def job(self, func=None, **options):
        if func is None:
            return lambda f: self.job(f, **options)
        first, self._seeded = not self._seeded, True
        if first and not isinstance(func, type):
            super().job(_SeededTrial(func, self._seed), **options)
            return func
        # Later jobs, and a Job subclass (its handleWork gets Args(id, trial,
        # **params)), run as declared: no per-trial seeding.
        return super().job(func, **options)

    def result(self, func):
        raise ConfigurationError('sweep() handles the results itself (the '
                                 'table, w.table after the block): declare '
                                 'jobs and frames only')

    finish = result

    def reduce(self, func=None, **kwargs):
        raise ConfigurationError('sweep() reduces the trials itself: declare '
                                 'jobs (and frames) only')

    def init(self, func):
        raise ConfigurationError('sweep() makes the initial work from '
                                 'variables: init is not available')

    def run(self):
        raise ConfigurationError('a sweep runs when its with block ends; do '
                                 'not call run()')

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        if len(self._frames) != 2:
            raise ConfigurationError(
                f'The frame {_name(self._frames[-1][1])!r} was never closed: '
                f'add an @w.frameEnd function after its stages.')
        self.frameEnd(_named(self._trial_end, TRIAL_FRAME))
        self.frameEnd(_named(self._combination_end, COMBINATION_FRAME))
        self._first = first_batch(self._criterion, _inline.getCpuCount(),
                                  len(self._combos))
        if self._show_progress:
            self._progress = _Progress(len(self._combos), self._first)
        try:
            rows = self._execute(keep_results=True)
        finally:
            if self._progress is not None:
                self._progress.close()
        if rows is None:
            return  # not the primary process
        self.table = _table(rows, self._params)
        import pandas as pd
        with pd.option_context('display.max_rows', None,
                               'display.max_columns', None,
                               'display.width', 200):
            print(self.table.to_string(), flush=True)
        if self._output is not None:
            self.table.to_csv(self._output)
        if self._plot is not None:
            from .plot import plot_table
            plot_table(self.table, self._params, self._plot,
                       self._criterion.confidence)

    # -- combination frame -------------------------------------------------
    def _combination_start(self, store, id, params):
        if not hasattr(store, 'trials'):
            store.id, store.params = id, params
            store.trials = AdaptiveTrials(self._criterion, self._first)
            new = store.trials.begin()
        else:
            new = store.trials.again()
            if not new:
                self._warn_if_unmet(store)
                if self._progress is not None:
                    self._progress.finished(store)
                return None
        if self._progress is not None:
            self._progress.update(store)
        return Multiple(Args(id, t, params) for t in new)

    def _warn_if_unmet(self, store) -> None:
        t = store.trials
        if t.criterion.fixed is not None or t.satisfied():
            return
        c = t.criterion
        unmet = ', '.join(
            f'{k}_err={t.error(k):.3g} > {c.target(t.moments[k].mean):.3g}'
            for k in t.keys if not t.error(k) <= c.target(t.moments[k].mean))
        warnings.warn(
            f'sweep: combination {store.id} {store.params} stopped at the '
            f'maximum of {c.max} trials before its means were known well '
            f'enough ({unmet}); raise the maximum (trials=-N or '
            f"trialsParms={{'max': N}}) or loosen E/eps", RuntimeWarning,
            stacklevel=1)

    def _combination_end(self, store, trial, result):
        new = store.trials.add(trial, result)
        if self._progress is not None:
            self._progress.update(store)
        return Multiple(Args(store.id, t, store.params) for t in new)

    def _combination_emit(self, store):
        return {'id': store.id, 'params': store.params,
                'keys': store.trials.keys or (), 'row': store.trials.row()}

    # -- trial frame -------------------------------------------------------
    def _trial_start(self, store, id, trial, params):
        if hasattr(store, 'results'):
            return None
        store.trial, store.params, store.results = trial, params, []
        return Args(id, trial, **params)

    def _trial_end(self, store, *args, **kwargs):
        if len(args) != 1 or kwargs:
            store.results.append(Args(*args, **kwargs))
        else:
            store.results.append(args[0])

    def _trial_emit(self, store):
        results = store.results
        if len(results) != 1 or not isinstance(results[0], dict):
            got = (f'{len(results)} results' if len(results) != 1
                   else f'{type(results[0]).__name__} {results[0]!r}'[:200])
            raise ValueError(f'{NOT_A_DICT}; trial {store.trial} of '
                             f'{store.params} gave {got}')
        result = {}
        for key, value in results[0].items():
            if key in store.params:
                raise ValueError(f'Result key {key!r} is also a parameter name '
                                 f'of the sweep; rename the result')
            if not isinstance(key, str):
                raise ValueError(f'Result keys must be strings; got {key!r}')
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f'Result {key!r} must be a number, not '
                                 f'{value!r} (trial {store.trial} of {store.params})')
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f'Result {key!r} is {value} (trial '
                                 f'{store.trial} of {store.params}): a mean '
                                 f'cannot be estimated from it')
            result[key] = value
        for key in result:
            if key.endswith(('_dev', '_err')) and key[:-4] in result:
                raise ValueError(f'Result keys {key[:-4]!r} and {key!r} clash: '
                                 f'the table names the deviation and error of '
                                 f'{key[:-4]!r} so; rename {key!r}')
        return Args(store.trial, result)


def _named(method: Callable, name: str) -> Callable:
    """``method`` under a name fit for error messages."""
    def call(*args, **kwargs):
        return method(*args, **kwargs)
    call.__qualname__ = call.__name__ = name
    return call


def _table(rows: list, params: list):
    import pandas as pd
    rows = sorted(rows, key=lambda r: r['id'])
    values = sorted({k for r in rows for k in r['keys']})
    columns = ['id', 'trials', *params]
    for v in values:
        columns += [v, v + '_dev', v + '_err']
    records = [{'id': r['id'], **r['params'], **r['row']} for r in rows]
    table = pd.DataFrame(records, columns=columns).set_index('id')
    table['trials'] = table['trials'].astype(int)
    return table


class _Progress:
    """Trials done / estimated per combination, and overall, on stderr."""

    def __init__(self, combinations: int, first: int):
        self.combinations = combinations
        self.first = first
        self.done_combinations = 0
        self.states: dict = {}
        self.bar = None
        self.last = 0.0
        if _is_tty():
            from tqdm import tqdm
            self.bar = tqdm(total=0, file=sys.stderr, unit='trial',
                            dynamic_ncols=True, leave=False, desc='sweep')

    def update(self, store) -> None:
        self.states[store.id] = store.trials
        now = time.monotonic()
        if now - self.last < (0.25 if self.bar else PLAIN_PROGRESS_SECONDS):
            return
        self.last = now
        self._show()

    def finished(self, store) -> None:
        self.states[store.id] = store.trials
        self.done_combinations += 1
        t = store.trials
        if self.bar is None:
            print(f'sweep: combination {store.id} {store.params} done with '
                  f'{t.done} trials ({self.done_combinations}/'
                  f'{self.combinations} combinations)', file=sys.stderr,
                  flush=True)
        else:
            self._show()

    def _show(self) -> None:
        done = sum(t.done for t in self.states.values())
        needed = sum(t.done if t.finished else max(t.needed(), t.started)
                     for t in self.states.values())
        needed += (self.combinations - len(self.states)) * self.first
        running = [f'{i}: {t.done}/{max(t.needed(), t.started)}'
                   for i, t in sorted(self.states.items()) if not t.finished]
        if self.bar is not None:
            self.bar.total = max(needed, done)
            self.bar.n = done
            more = ', ...' if len(running) > 3 else ''
            self.bar.set_postfix_str(
                f'{self.done_combinations}/{self.combinations} combinations; '
                f'running {", ".join(running[:3])}{more}', refresh=False)
            self.bar.refresh()
            return
        running = ', '.join(running)
        print(f'sweep: {done}/{needed} trials, {self.done_combinations}/'
              f'{self.combinations} combinations done; running (trials done/'
              f'estimated): {running}', file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
