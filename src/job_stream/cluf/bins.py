"""Which bin an argument belongs to: by position, by a stable hash, or by key.

A bin spec ``"x/y"`` selects bins of ``y`` (zero-based); ``x`` is a list of
indices and ranges: ``"3/10"``, ``"0-2,5/10"``.  Every process that reads the
same arguments puts each one in the same bin, so ``y`` subjobs given bins
``0/y`` ... ``y-1/y`` together run every argument exactly once.

    >>> parse_bins('0-2,5/10')
    (frozenset({0, 1, 2, 5}), 10)
    >>> stable_hash(['a', 1]) == stable_hash(['a', 1])
    True
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, FrozenSet, List, Tuple, Union

from ..objects import Args


class BinSpecError(ValueError):
    """A malformed --bins, --hash or --key value."""


_INDICES = re.compile(r'^\d+(-\d+)?(,\d+(-\d+)?)*$')


def parse_indices(text: str, what: str) -> List[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]`` (ranges inclusive)."""
    text = text.replace(' ', '')
    if not _INDICES.match(text):
        raise BinSpecError(
            f'{what} {text!r} is malformed: expected indices and ranges such '
            f'as "3" or "0-2,5".')
    out: List[int] = []
    for part in text.split(','):
        a, _, b = part.partition('-')
        lo, hi = int(a), int(b or a)
        if hi < lo:
            raise BinSpecError(f'{what}: the range {part!r} is backwards; '
                               f'write it as "{hi}-{lo}".')
        out.extend(range(lo, hi + 1))
    return out


def parse_bins(text: str) -> Tuple[FrozenSet[int], int]:
    """``"x/y"`` -> (selected bins, number of bins); see the module doc."""
    text = str(text).strip()
    chosen, slash, count = text.rpartition('/')
    if not slash or not count.strip().isdigit():
        raise BinSpecError(
            f'--bins {text!r} is malformed: expected "x/y", bin x of y '
            f'(zero-based), e.g. "3/10" or "0-2,5/10".')
    total = int(count)
    if total < 1:
        raise BinSpecError(f'--bins {text!r}: the number of bins must be at '
                           f'least 1.')
    bins = parse_indices(chosen, f'--bins {text!r}: the bin list')
    bad = [b for b in bins if b >= total]
    if bad:
        raise BinSpecError(
            f'--bins {text!r}: bin {bad[0]} is out of range; bins of {total} '
            f'are numbered 0 to {total - 1}.')
    return frozenset(bins), total


def format_bins(bins, total: int) -> str:
    """The inverse of :func:`parse_bins`, with runs written as ranges."""
    bins = sorted(bins)
    parts, i = [], 0
    while i < len(bins):
        j = i
        while j + 1 < len(bins) and bins[j + 1] == bins[j] + 1:
            j += 1
        parts.append(str(bins[i]) if i == j else f'{bins[i]}-{bins[j]}')
        i = j + 1
    return f'{",".join(parts)}/{total}'


def stable_hash(parts: List[str]) -> int:
    """A 64-bit hash of strings, identical in every process and machine
    (unlike the built-in ``hash``, which is salted per process)."""
    h = hashlib.sha256()
    for p in parts:
        data = p.encode('utf-8', 'surrogatepass')
        h.update(len(data).to_bytes(8, 'big'))
        h.update(data)
    return int.from_bytes(h.digest()[:8], 'big')


def call_parts(value: Any) -> Tuple[tuple, dict]:
    """How cluf calls the target with ``value``: (positional, keyword)."""
    if type(value) is Args:
        return tuple(value.args), dict(value.kwargs)
    if isinstance(value, tuple):
        return value, {}
    return (value,), {}


Selector = List[Union[int, str]]


def parse_selector(text: str, what: str) -> Selector:
    """``"0-2,5,my_kwarg"`` -> ``[0, 1, 2, 5, 'my_kwarg']``."""
    out: Selector = []
    text = str(text).strip()
    if not text:
        raise BinSpecError(f'{what} is empty: give argument positions, ranges '
                           f'or keyword names, e.g. "0-2,5,my_kwarg".')
    for part in text.split(','):
        part = part.strip()
        if re.fullmatch(r'\d+(-\d+)?', part):
            out.extend(parse_indices(part, what))
        elif part.isidentifier():
            out.append(part)
        else:
            raise BinSpecError(
                f'{what} {text!r} is malformed at {part!r}: expected argument '
                f'positions ("0"), ranges ("0-2") or keyword names, separated '
                f'by commas.')
    return out


def _selected(value: Any, selector: Selector) -> List[Tuple[Union[int, str], Any]]:
    args, kwargs = call_parts(value)
    found = []
    for s in selector:
        if isinstance(s, int):
            if s < len(args):
                found.append((s, args[s]))
        elif s in kwargs:
            found.append((s, kwargs[s]))
    return found


def make_binner(total: int, hash_spec: str = None,
                key: str = None) -> Callable[[int, Any], int]:
    """A function ``(position, value) -> bin`` for ``total`` bins."""
    if hash_spec is not None and key is not None:
        raise BinSpecError('--hash and --key are mutually exclusive: a bin '
                           'comes either from a hash of arguments or from one '
                           'argument.')
    if hash_spec is not None:
        selector = parse_selector(hash_spec, f'--hash {hash_spec!r}')

        def by_hash(position, value):
            parts = [f'{k}={v}' for k, v in _selected(value, selector)]
            return stable_hash(parts) % total
        return by_hash
    if key is not None:
        key_s = str(key).strip()
        if key_s.isdigit():
            selector: Selector = [int(key_s)]
        elif key_s.isidentifier():
            selector = [key_s]
        else:
            raise BinSpecError(f'--key {key!r} is malformed: give one argument '
                               f'position ("0") or keyword name.')

        def by_key(position, value):
            found = _selected(value, selector)
            if not found:
                raise BinSpecError(
                    f'--key {key_s}: argument #{position} ({value!r}) has no '
                    f'argument {key_s!r} to take its bin from.')
            k = found[0][1]
            if isinstance(k, bool) or not isinstance(k, int):
                try:
                    k = int(str(k))
                except ValueError:
                    raise BinSpecError(
                        f'--key {key_s}: argument #{position} has {key_s} = '
                        f'{k!r}, not an integer; the bin is that integer '
                        f'modulo the number of bins.') from None
            return k % total
        return by_key
    return lambda position, value: position % total
