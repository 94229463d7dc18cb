"""The inline API: a pipeline written as decorated functions in one block.

    from job_stream.inline import Work, Multiple

    with Work(range(10)) as w:
        @w.job
        def square(x):
            return x * x

        @w.reduce(store=lambda: Object(total=0), emit=lambda s: s.total)
        def total(store, inputs, others):
            store.total += sum(inputs)

        @w.result
        def show(r):
            print(r)            # 285

Stages run in the order they are declared.  ``job`` functions run in worker
processes, one per core; ``reduce`` closes the module it is in (at top level:
all the work), ``frame`` ... ``frameEnd`` is a loop per piece of work, and
``result`` / ``finish`` receive what leaves the pipeline on the primary
process.  See docs/inline.md for every rule.
"""
from __future__ import annotations

import builtins
import inspect
import itertools
import os
from operator import itemgetter
from typing import Any, Callable, Iterable, Optional

from .errors import ConfigurationError, JobStreamError
from .executors import mpi as _mpi
from .objects import Args, Multiple, Object, flatten_into
from .pipeline import FrameSpec, JobStage, Module, Pipeline, ReducerSpec
from .runner import cpu_count as _cpu_count
from .runner import run as _run
from .stages import Frame, Job, Reducer

__all__ = ['Work', 'Args', 'Multiple', 'Object', 'map', 'getCpuCount',
           'getHostCpuCount', 'getRank']

# Options of a run, accepted by Work(...), common.run(...) and map(...).
RUN_OPTIONS = {
    'processes': 'number of local worker processes (default: all cores)',
    'maxAttempts': 'tries for work whose worker process died (default 3)',
    'showProgress': 'progress line on a terminal (default True)',
    'report': 'end-of-run statistics on stderr (default True)',
    'checkpointFile': 'resume from / checkpoint to this file (default: the '
                      'JOBS_CHECKPOINT environment variable, else none)',
    'checkpointInterval': 'seconds between checkpoints (default 600)',
    'checkpointSyncInterval': 'accepted for compatibility; unused',
    'cache': 'folder caching the results of every job (see docs/caching.md)',
    'record': 'JSON-lines file a record of the run is appended to '
              '(default: $JOBS_RECORD; False: no record)',
}
JOB_OPTIONS = ('useMultiprocessing', 'timeout', 'cache', 'depends')


def check_run_options(options: dict) -> None:
    """Refuse unknown run options with the list of known ones."""
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        known = ', '.join(sorted(RUN_OPTIONS))
        raise TypeError(f'Unknown option {unknown[0]!r}; the options of a run '
                        f'are: {known}.')


def run_pipeline(pipeline: Pipeline, work: Iterable, handle_result,
                 options: dict, init: Optional[Callable[[], list]] = None):
    """Run with the user's option names mapped to the runner's.  ``init``
    returns work read before ``work``; it is not called when resuming."""
    check_run_options(options)
    checkpoint = options.get('checkpointFile')
    if checkpoint is None:
        checkpoint = os.environ.get('JOBS_CHECKPOINT') or None
    if options.get('cache'):
        _default_cache(pipeline.root, options['cache'])
    return _run(pipeline, work, handle_result=handle_result, init=init,
                processes=options.get('processes'),
                max_attempts=options.get('maxAttempts', 3),
                show_progress=options.get('showProgress', True),
                report=options.get('report', True),
                checkpoint=checkpoint,
                checkpoint_interval=options.get('checkpointInterval', 600.0),
                checkpoint_sync_interval=options.get('checkpointSyncInterval', 0),
                record=options.get('record'))


def _default_cache(module: Module, folder) -> None:
    """The run's ``cache=`` folder for every job that did not choose."""
    for stage in module.stages:
        if isinstance(stage, Module):
            _default_cache(stage, folder)
        elif 'cache' not in stage.options:
            stage.options['cache'] = folder


class _ResultCall:
    """Calls the ``@w.result`` function on a result, unpacking ``Args``.

    The runner asks :meth:`for_batch` which function to call on each
    result of a batch: the user's own when the batch holds no ``Args``
    (no wrapper call per result on the primary's hot path).
    """

    def __init__(self, handler: Callable):
        self.handler = handler

    def __call__(self, result: Any) -> Any:
        return _call(self.handler, work=result)

    def for_batch(self, results: list) -> Callable:
        return self if Args in set(builtins.map(type, results)) else self.handler


def _arg_count(func: Callable) -> int:
    params = inspect.signature(func).parameters.values()
    return sum(1 for p in params if p.kind in (
        p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL,
        p.VAR_KEYWORD))


def _check_args(func: Callable, what: str, count: int, exact: bool,
                names: str) -> None:
    if not callable(func):
        raise TypeError(f'@w.{what} decorates a function; got {func!r}')
    try:
        found = _arg_count(func)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    if found == count if exact else found >= count:
        return
    name = getattr(func, '__name__', repr(func))
    need = 'exactly' if exact else 'at least'
    plural = '' if count == 1 else 's'
    raise TypeError(f'{what} function {name!r} must take {need} {count} '
                    f'argument{plural} ({names}); it takes {found}.')


def _call(func: Callable, *lead: Any, work: Any) -> Any:
    """Call ``func(*lead, work)``, unpacking ``Args`` work."""
    if type(work) is Args:
        return func(*lead, *work.args, **work.kwargs)
    return func(*lead, work)


class _InlineReducer(Reducer):
    def __init__(self, func, store, emit):
        super().__init__()
        self._func, self._store, self._emit = func, store, emit

    def _open(self):
        return self._store()

    def _add(self, store, works):
        return self._collect(lambda: self.recur(self._func(store, works, [])))

    def _done(self, store, first):
        return self._collect(lambda: self.emit(self._emit(store)))


class _InlineFrame(Frame):
    def __init__(self, func, end, store, emit):
        super().__init__()
        self._func, self._end, self._store, self._emit = func, end, store, emit

    def _open(self):
        return self._store()

    def _first(self, store, work):
        return self._collect(lambda: self.recur(_call(self._func, store, work=work)))

    def _add(self, store, works):
        def each():
            for work in works:
                self.recur(_call(self._end, store, work=work))
        return self._collect(each)

    def _done(self, store, first):
        def again():
            more = _call(self._func, store, work=first)
            if more is None:
                self.emit(self._emit(store))
            else:
                self.recur(more)
        return self._collect(again)


def _identity(store):
    return store


class Work:
    """A pipeline declared with decorators, run on a ``with`` block's exit.

    Args:
        initialWork: the work to process, any iterable (a generator is read
            lazily, never held in memory whole).
        useMultiprocessing: run jobs in worker processes (default) or all
            in this process.
        **runKwargs: options of the run: ``processes``, ``maxAttempts``,
            ``showProgress``, ``report``, ``checkpointFile``,
            ``checkpointInterval``, ``checkpointSyncInterval`` (see
            docs/checkpoints.md), ``cache`` (a folder: memoize every job,
            see docs/caching.md), ``record`` (a JSON-lines file that gets
            one record per run; default ``$JOBS_RECORD``).

    Example::

        with Work([1, 2, 3]) as w:
            @w.job
            def double(x):
                return 2 * x
            @w.finish
            def done(results):
                print(sorted(results))   # [2, 4, 6]
    """

    def __init__(self, initialWork: Iterable = (), useMultiprocessing: bool = True,
                 **runKwargs: Any):
        check_run_options(runKwargs)
        self._initial = initialWork
        self._multiprocessing = useMultiprocessing
        self._options = runKwargs
        self._pipeline = Pipeline()
        self._frames: list = []  # open frames: (module, frame function, store, emit)
        self._inits: list = []
        self._result: Optional[Callable] = None
        self._finish: Optional[Callable] = None

    def __enter__(self) -> 'Work':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._execute(keep_results=False)

    # -- declaring stages -------------------------------------------------
    def init(self, func: Callable[[], Any]) -> Callable:
        """Declare a function called once, before any job, on the primary
        process; what it returns (a value or ``Multiple``) is added to the
        initial work.  Not called again when resuming from a checkpoint."""
        self._assert_open('init')
        _check_args(func, 'init', 0, True, 'none')
        self._inits.append(func)
        return func

    def job(self, func: Optional[Callable] = None, **options: Any):
        """Declare a job: ``func(work)`` returns the next work (``None``:
        nothing, ``Multiple``: several).  Options: ``useMultiprocessing``
        (False runs it in this process), ``timeout`` (seconds per call).
        ``cache`` (a folder: memoize this job; False: not even when the
        run has ``cache=``), ``depends`` (what else the cache key covers:
        functions, files, values; see docs/caching.md).
        A :class:`job_stream.common.Job` subclass is accepted too."""
        if func is None:
            return lambda f: self.job(f, **options)
        self._assert_open('job')
        unknown = sorted(set(options) - set(JOB_OPTIONS))
        if unknown:
            raise TypeError(f'Unknown job option {unknown[0]!r}; the options '
                            f'of a job are: {", ".join(JOB_OPTIONS)}.')
        if isinstance(func, type) and issubclass(func, Job):
            default_mp = func.USE_MULTIPROCESSING
        else:
            _check_args(func, 'job', 1, False, 'work')
            default_mp = True
        mp = options.get('useMultiprocessing', default_mp) and self._multiprocessing
        timeout = options.get('timeout')
        if timeout is not None and not timeout > 0:
            raise ValueError(f'timeout must be a positive number of seconds, '
                             f'not {timeout!r}')
        stage_options = {k: options[k] for k in ('cache', 'depends')
                         if k in options}
        if 'depends' in options and not options.get(
                'cache', self._options.get('cache')):
            raise ValueError(f'depends= is given for job {_name(func)!r}, which '
                             f'is not cached: add cache=FOLDER to the job or '
                             f'to the Work.')
        self._current().stages.append(JobStage(
            func, _name(func), use_multiprocessing=mp, timeout=timeout,
            options=stage_options))
        return func

    def reduce(self, func: Optional[Callable] = None, *, store: Callable = Object,
               emit: Callable = _identity):
        """Declare a reducer closing the current module:
        ``func(store, inputs, others)`` adds a list of inputs to ``store``
        (a new ``store()`` per reduction); its return value is recurred into
        the module.  When the reduction is finished ``emit(store)`` is
        passed on.  A :class:`job_stream.common.Reducer` subclass is
        accepted too."""
        if func is None:
            return lambda f: self.reduce(f, store=store, emit=emit)
        self._assert_open('reduce')
        if self._frames:
            raise ConfigurationError(
                f'reduce {_name(func)!r} is inside the frame '
                f'{_name(self._frames[-1][1])!r}: close the frame with '
                f'@w.frameEnd first (a frame already reduces its own work).')
        if isinstance(func, type) and issubclass(func, Reducer):
            spec = ReducerSpec(func, _name(func))
        else:
            _check_args(func, 'reduce', 3, True, 'store, inputs, others')
            spec = ReducerSpec(lambda: _InlineReducer(func, store, emit),
                               _name(func))
        root = self._pipeline.root
        if root.closer is not None:
            self._wrap_root()
            root = self._pipeline.root
        root.closer = spec
        return func

    def frame(self, func: Optional[Callable] = None, *, store: Callable = Object,
              emit: Callable = _identity):
        """Open a frame (a while loop per piece of work): ``func(store, first)``
        runs when work enters and again each time all the work it recurred
        has come back; returning a value recurs it through the stages up to
        ``frameEnd``, returning ``None`` ends the loop and passes
        ``emit(store)`` on."""
        if func is None:
            return lambda f: self.frame(f, store=store, emit=emit)
        self._assert_open('frame')
        _check_args(func, 'frame', 2, False, 'store, first')
        module = Module()
        self._current().stages.append(module)
        self._frames.append((module, func, store, emit))
        return func

    def frameEnd(self, func: Callable) -> Callable:
        """Close the innermost frame: ``func(store, next)`` receives each
        piece of work leaving the frame's stages; its return value recurs."""
        self._assert_open('frameEnd')
        if not self._frames:
            raise ConfigurationError(
                f'frameEnd {_name(func)!r} has no frame to close: declare '
                f'@w.frame before the stages it loops over.')
        _check_args(func, 'frameEnd', 2, False, 'store, next')
        module, start, store, emit = self._frames.pop()
        module.closer = FrameSpec(
            lambda: _InlineFrame(start, func, store, emit), _name(start))
        return func

    def result(self, func: Callable) -> Callable:
        """Declare a function called on the primary process with each result."""
        self._assert_open('result')
        _check_args(func, 'result', 1, False, 'result')
        self._result = func
        return func

    def finish(self, func: Callable[[list], Any]) -> Callable:
        """Declare a function called once with the list of all results; its
        return value is what :meth:`run` returns."""
        self._assert_open('finish')
        _check_args(func, 'finish', 1, True, 'results')
        self._finish = func
        return func

    # -- running ------------------------------------------------------------
    def run(self) -> Any:
        """Run the pipeline.  Returns ``finish``'s value if declared, None if
        ``result`` was, else the list of results (None on MPI ranks > 0)."""
        return self._execute(keep_results=True)

    def _execute(self, keep_results: bool) -> Any:
        if self._frames:
            raise ConfigurationError(
                f'The frame {_name(self._frames[-1][1])!r} was never closed: '
                f'add an @w.frameEnd function after its stages.')
        world = _mpi.world()
        if world is not None and world.rank > 0:
            # Another rank: serve rank 0's batches; results, finish and
            # init belong to rank 0.  (Not rank(): inside a worker process,
            # which knows its rank but has no MPI, a run is a local one.)
            run_pipeline(self._pipeline, (), None, self._options)
            return None
        inits = self._inits

        def initial() -> list:
            out: list = []
            for init in inits:
                flatten_into(out, init())
            return out
        work, init = self._initial, (initial if inits else None)
        if self._result is not None:
            handler = self._result
            run_pipeline(self._pipeline, work, _ResultCall(handler),
                         self._options, init)
            return None
        if self._finish is None and not keep_results:
            run_pipeline(self._pipeline, work, _discard, self._options, init)
            return None
        results = run_pipeline(self._pipeline, work, None, self._options, init)
        return self._finish(results) if self._finish is not None else results

    # -- helpers --------------------------------------------------------------
    def _assert_open(self, what: str) -> None:
        if self._result is not None or self._finish is not None:
            done = 'result' if self._result is not None else 'finish'
            raise ConfigurationError(
                f'Cannot declare {what} after {done}: result and finish end the '
                f'pipeline, and only one of them may be declared, once.')

    def _current(self) -> Module:
        if self._frames:
            return self._frames[-1][0]
        if self._pipeline.root.closer is not None:
            self._wrap_root()
        return self._pipeline.root

    def _wrap_root(self) -> None:
        """Stages after a top-level reduce: the reduced module becomes the
        first stage of a new root, still reducing all the initial work."""
        old = self._pipeline.root
        old.gather = True
        self._pipeline.root = Module(stages=[old])


def _discard(result: Any) -> None:
    pass


def _name(func: Any) -> str:
    return getattr(func, '__qualname__', None) or getattr(func, '__name__', None) or repr(func)


class _ForceCheckpointJob(Job):
    """Test hook: passes work on, then checkpoints and exits (status 1) once
    the batch holding it is applied.  Re-running the same command resumes."""

    def handleWork(self, work):
        self._forceCheckpoint(True)
        self.emit(work)


class _ForceCheckpointAndGoJob(Job):
    """Test hook: passes work on and forces a checkpoint, then goes on."""

    def handleWork(self, work):
        self._forceCheckpoint(False)
        self.emit(work)


class _IndexedCall:
    """The job of :func:`map`: ``func(x)`` (``func(*x)`` with several
    iterables), run a batch segment at a time by :meth:`batch_call`.

    Works carry no index: a segment of consecutive input items comes back
    as one ``(position of its first item, [values])`` pair, so the primary
    puts results in order per batch, not per item.
    """

    def __init__(self, func: Callable, star: bool):
        self.func = func
        self.star = star
        self.__qualname__ = _name(func)

    def __call__(self, x):
        return self.func(*x) if self.star else self.func(x)

    def batch_call(self, works: list, it, position: Optional[int]) -> list:
        if position is None:
            raise JobStreamError(
                'internal error: map() received a batch that is not a run '
                'of consecutive input items; please report this')
        calls = itertools.starmap if self.star else builtins.map
        return [(position, list(calls(self.func, it)))] if works else []


_first = itemgetter(0)


def map(func: Callable, *iterables: Iterable, **workKwargs: Any) -> list:
    """Like the builtin ``map``, in parallel; returns a list, in order.

        >>> import job_stream
        >>> job_stream.map(pow, [1, 2, 3], [2, 2, 2], report=False)
        [1, 4, 9]
    """
    if not iterables:
        raise TypeError('map() needs at least one iterable of arguments')
    star = len(iterables) > 1
    w = Work(builtins.zip(*iterables) if star else iterables[0], **workKwargs)
    w.job(_IndexedCall(func, star))
    results = w.run()
    if results is None:
        return None
    results.sort(key=_first)  # one (first index, values) pair per segment
    out: list = []
    for _, values in results:
        out.extend(values)
    return out


def getCpuCount() -> int:
    """Worker slots of a run: the cores of this machine, or under MPI the
    sum of every rank's."""
    return _cpu_count()


def getHostCpuCount() -> int:
    """Cores usable on this host: its ``cpus=``, else its CPU affinity
    bounded by its cgroup's CPU quota and its SLURM allocation."""
    return _mpi.host_cpu_count()


def getRank() -> int:
    """This process's rank: 0 unless running under MPI."""
    return _mpi.rank()
