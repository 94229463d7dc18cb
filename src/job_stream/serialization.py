"""How code and work cross process boundaries.

* Code (the pipeline's functions and classes) travels by value with
  cloudpickle, so lambdas, closures and everything defined in the user's
  ``__main__`` reach workers that never import that script.
* Work travels with the standard pickle (protocol 5), which is several times
  faster.  Work that refers to ``__main__`` (an instance of a class defined
  in the script) or that plain pickle refuses (a lambda) falls back to
  cloudpickle; a byte search per message, not per item, decides.

    >>> loads(dumps([1, 'a']))
    [1, 'a']
"""
from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

PROTOCOL = 5
loads = pickle.loads


def dumps_code(obj: Any) -> bytes:
    """Serialize functions/classes by value (cloudpickle)."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def dumps(obj: Any) -> bytes:
    """Serialize work: plain pickle when it can be loaded anywhere."""
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    if b'__main__' in data:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    return data


def find_unpicklable(works: list) -> tuple:
    """Return ``(index, error)`` of the first work that cannot be pickled."""
    for i, work in enumerate(works):
        try:
            cloudpickle.dumps(work, protocol=PROTOCOL)
        except Exception as e:
            return i, e
    return -1, None
