"""Errors a run can end with, and how a failure in user code is reported.

A user's exception keeps its own type (``except ValueError`` works around
``run()``); the traceback from the worker is attached as ``__cause__`` (a
:class:`RemoteTraceback`, as ``concurrent.futures`` does) and a note names
the stage and the work::

    RemoteTraceback: ...remote traceback...
    The above exception was the direct cause of the following exception:
    ...
    ValueError: boom
    While processing work with target: parse
      work: 'line 17'

Infrastructure failures have their own types with their own advice:
:class:`WorkerLostError` (a worker process died or hung),
:class:`RankLostError` (an MPI rank or its host was lost).
"""
from __future__ import annotations

import reprlib

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = 6
_repr.maxdict = 6


def short_repr(obj: object) -> str:
    """A repr of at most about 100 characters, safe for any object."""
    try:
        return _repr.repr(obj)
    except Exception as e:  # a broken __repr__ must not hide the real error
        return f'<{type(obj).__name__} (repr failed: {e})>'


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in another process."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class JobStreamError(RuntimeError):
    """Base class of job_stream's own errors."""


class WorkerLostError(JobStreamError):
    """A worker process died (signal, OOM killer) or overran its timeout on
    the same work more times than allowed."""


class RankLostError(JobStreamError):
    """Under MPI, a rank stopped answering: its process died, or its host or
    its network link is down.  The run ends on every rank."""


class ConfigurationError(JobStreamError, ValueError):
    """The pipeline or its options are malformed; the message says how."""


def annotate(exc: BaseException, stage: str, work: object) -> BaseException:
    """Add the 'While processing work with target' note to ``exc``."""
    exc.add_note(f'While processing work with target: {stage}\n'
                 f'  work: {short_repr(work)}')
    return exc
