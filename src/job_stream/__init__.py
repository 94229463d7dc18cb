"""job_stream: pipelines, reducers, loops and parameter sweeps, written once,
run on a laptop or a cluster.

    >>> import job_stream
    >>> job_stream.map(lambda x: x * x, range(4), report=False)
    [0, 1, 4, 9]

The front ends are :mod:`job_stream.inline` (decorators) and
:mod:`job_stream.common` (classes and configs).  See the docs/ folder.
"""
from .checkpoint import checkpointInfo
from .inline import (Args, Multiple, Object, getCpuCount, getHostCpuCount,
                     getRank, map)
from .invoke import invoke
from .shared import Shared

#: cluster-func's name for :class:`~job_stream.inline.Args`.
Arguments = Args

__version__ = '0.1.0'
__all__ = ['Args', 'Arguments', 'Multiple', 'Object', 'map', 'getCpuCount',
           'getHostCpuCount', 'getRank', 'checkpointInfo', 'invoke',
           'Shared', '__version__']
