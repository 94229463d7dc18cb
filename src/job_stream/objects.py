"""The small value types work is made of: :class:`Args`, :class:`Multiple`, :class:`Object`.

    >>> Object(a=1, b='x')
    Object(a=1, b='x')
    >>> list(Multiple([1, None, 2]))
    [1, 2]
    >>> Args(1, 2, c=3)
    Args(1, 2, c=3)
"""
from __future__ import annotations

from typing import Any, Iterable


class Args:
    """Work that a job is called with as ``f(*args, **kwargs)``.

    ``Args`` is the same class as :class:`job_stream.Arguments` (cluster-func's
    name).  Example::

        with Work([Args(1, b=2)]) as w:
            @w.job
            def add(a, b):
                return a + b
    """

    __slots__ = ('args', 'kwargs')

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args]
        parts += [f'{k}={v!r}' for k, v in self.kwargs.items()]
        return f"Args({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Args) and self.args == other.args
                and self.kwargs == other.kwargs)

    def __hash__(self) -> int:
        return hash((self.args, tuple(sorted(self.kwargs.items()))))

    def __reduce__(self):
        return (_make_args, (self.args, self.kwargs))


def _make_args(args: tuple, kwargs: dict) -> Args:
    a = Args(*args)
    a.kwargs = kwargs
    return a


class Multiple:
    """Several pieces of work emitted at once by a job, init, reducer or frame.

    Any iterable (a list, a generator...) may be wrapped; ``None`` members are
    skipped.  Example: ``return Multiple(range(3))`` sends 0, 1 and 2 on.
    """

    __slots__ = ('items',)

    def __init__(self, items: Iterable[Any]):
        self.items = items

    def __iter__(self):
        return (x for x in self.items if x is not None)

    def __repr__(self) -> str:
        return f'Multiple({self.items!r})'


class Object:
    """An attribute bag, the default store of reducers and frames.

    Example::

        >>> o = Object(total=0)
        >>> o.total += 5
        >>> o
        Object(total=5)
    """

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        inner = ', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())
        return f'Object({inner})'

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__


def flatten_into(out: list, value: Any) -> None:
    """Append what a user function returned to ``out`` (None: nothing)."""
    if value is None:
        return
    if isinstance(value, Multiple):
        out.extend(value)
    else:
        out.append(value)
