"""job_stream: pipelines, reducers, loops and parameter sweeps, written once,
run on a laptop or a cluster.

    >>> import job_stream
    >>> job_stream.map(lambda x: x * x, range(4), report=False)
    [0, 1, 4, 9]

The front ends are :mod:`job_stream.inline` (decorators) and
:mod:`job_stream.common` (classes and configs).  See the docs/ folder.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = '0.1.0'

# Public name -> (submodule, attribute).  Imported on first use (PEP 562), so
# that the job_stream command and worker processes, which need none of them,
# start fast; ``from job_stream import map`` works as before.
_LAZY = {
    'Args': ('inline', 'Args'),
    'Arguments': ('inline', 'Args'),  # cluster-func's name for Args
    'Multiple': ('inline', 'Multiple'),
    'Object': ('inline', 'Object'),
    'map': ('inline', 'map'),
    'getCpuCount': ('inline', 'getCpuCount'),
    'getHostCpuCount': ('inline', 'getHostCpuCount'),
    'getRank': ('inline', 'getRank'),
    'checkpointInfo': ('checkpoint', 'checkpointInfo'),
    'invoke': ('invoke', 'invoke'),
    'Shared': ('shared', 'Shared'),
}

__all__ = sorted(_LAZY) + ['__version__']


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}') from None
    value = getattr(importlib.import_module(f'.{module}', __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
