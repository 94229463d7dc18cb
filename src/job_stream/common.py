"""The class API: ``Job``, ``Reducer`` and ``Frame`` subclasses wired by a config.

    from job_stream import common

    class AddOne(common.Job):
        def handleWork(self, work):
            self.emit(work + self.config.get('step', 1))

    class Sum(common.Reducer):
        def handleInit(self, store):
            store.total = 0
        def handleAdd(self, store, work):
            store.total += work
        def handleDone(self, store):
            self.emit(store.total)

    common.work = [1, 2, 3]
    common.run({'reducer': Sum, 'jobs': [{'type': AddOne, 'step': 10}]})
    # prints 36

The config is a dict, or the path of a YAML file with the same structure:
``{'reducer' or 'frame': X, 'jobs': [...]}`` where each entry of ``jobs`` is
a Job class, a class name, ``{'type': X, **options}`` (the options reach
``self.config``), or a nested ``{'reducer' or 'frame': X, 'jobs': [...]}``.
In YAML, types are class names: the bare name for classes defined in the
script (``__main__``), ``module.Class`` otherwise.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

from .errors import ConfigurationError
from .inline import run_pipeline
from .pipeline import FrameSpec, JobStage, Module, Pipeline, ReducerSpec
from .stages import Frame, Job, Reducer

__all__ = ['Job', 'Reducer', 'Frame', 'work', 'run']

#: The initial work of :func:`run` (the original's module-level list).
work: list = []


def run(config: Union[dict, str], handleResult: Optional[Callable] = None,
        **kwargs: Any) -> None:
    """Run the pipeline described by ``config`` over :data:`work`.

    Each result is passed to ``handleResult`` on the primary process (by
    default, its ``repr`` is printed).  ``kwargs`` are the options of a run
    (see :class:`job_stream.inline.Work`).
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_yaml(config)
    pipeline = build_pipeline(config)
    handler = handleResult if handleResult is not None else _print_result
    run_pipeline(pipeline, work, handler, kwargs)


def _print_result(result: Any) -> None:
    print(repr(result), flush=True)


def load_yaml(path) -> dict:
    """Read a YAML config file."""
    import yaml
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as e:
        raise ConfigurationError(f'Cannot read the config file {path}: '
                                 f'{e.strerror}.') from e
    if not isinstance(config, dict):
        raise ConfigurationError(f'The config file {path} must hold a mapping '
                                 f'with "jobs" (and "reducer" or "frame").')
    return config


def build_pipeline(config: dict) -> Pipeline:
    """Translate a config dict into a :class:`Pipeline`."""
    pipeline = Pipeline()
    root = _module(config, 'the top level')
    if isinstance(root.closer, FrameSpec):
        # A frame loops per piece of work, so it cannot be the root's one
        # reduction: each initial work item enters it on its own.
        pipeline.root.stages.append(root)
    else:
        pipeline.root = root
    return pipeline


def _module(config: dict, where: str) -> Module:
    known = {'jobs', 'reducer', 'frame'}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigurationError(
            f'Unknown key {unknown[0]!r} in the module at {where}; a module '
            f'has "jobs" and at most one of "reducer" or "frame".')
    if 'reducer' in config and 'frame' in config:
        raise ConfigurationError(f'The module at {where} has both a reducer and '
                                 f'a frame; a module has at most one.')
    module = Module()
    for kind, base, spec in (('reducer', Reducer, ReducerSpec),
                             ('frame', Frame, FrameSpec)):
        if kind in config:
            cls, options = _resolve(config[kind], base, f'{kind} at {where}')
            module.closer = spec(cls, cls.__name__, options)
    jobs = config.get('jobs', [])
    if not isinstance(jobs, list):
        raise ConfigurationError(f'"jobs" at {where} must be a list.')
    for i, entry in enumerate(jobs):
        place = f'jobs[{i}] of {where}'
        if isinstance(entry, dict) and ('reducer' in entry or 'frame' in entry
                                        or 'jobs' in entry):
            module.stages.append(_module(entry, place))
        else:
            cls, options = _resolve(entry, Job, place)
            module.stages.append(JobStage(cls, cls.__name__,
                                          use_multiprocessing=cls.USE_MULTIPROCESSING,
                                          config=options))
    return module


def _resolve(entry: Any, base: type, where: str) -> tuple:
    """``entry`` -> (class, options) for a class, a name or a dict."""
    options: dict = {}
    if isinstance(entry, dict):
        if 'type' not in entry:
            raise ConfigurationError(f'The {where} needs a "type".')
        options = {k: v for k, v in entry.items() if k != 'type'}
        entry = entry['type']
    if isinstance(entry, str):
        entry = _by_name(entry, base, where)
    if not (isinstance(entry, type) and issubclass(entry, base)):
        raise ConfigurationError(f'The {where} must be a {base.__name__} '
                                 f'subclass, not {entry!r}.')
    return entry, options


def _by_name(name: str, base: type, where: str) -> type:
    classes = {}
    for cls in _subclasses(base):
        if cls.__module__.startswith('job_stream.'):
            continue
        classes[_config_name(cls)] = cls
    if name in classes:
        return classes[name]
    known = ', '.join(sorted(classes)) or 'none'
    raise ConfigurationError(
        f'Unknown type {name!r} for the {where}; the known {base.__name__} '
        f'classes are: {known}. Define the class before calling run(), or '
        f'write its module-qualified name.')


def _config_name(cls: type) -> str:
    if cls.__module__ == '__main__':
        return cls.__qualname__
    return f'{cls.__module__}.{cls.__qualname__}'


def _subclasses(base: type):
    seen = set()
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.add(cls)
            stack.extend(cls.__subclasses__())
            yield cls
