"""What a remembered value costs in memory, so in-process tables are bounded in bytes.

A table bounded only in entries is bounded in nothing when a caller chooses how large each
entry is: a few hundred entries of a megabyte each are hundreds of megabytes. Tables that keep
what callers send count it with ``footprint`` when they store it (never on a lookup).
"""

from __future__ import annotations

from sys import getsizeof
from typing import Any

# A dictionary slot and the hash table's spare room, per entry (CPython keeps dicts at most
# two thirds full; 8-byte hash, key and value pointers).
DICT_SLOT_BYTES = 40
_ATOMS = (str, bytes, int, float, bool, type(None))
_SEQUENCES = (tuple, list, set, frozenset)


def footprint(value: Any) -> int:
    """The approximate bytes ``value`` holds: itself and what it contains (strings, bytes,
    numbers, tuples, lists, sets, dicts, and the attributes of other objects). Objects shared
    with others (an interned name, ``None``) are counted as if they were not: it errs on the
    large side."""
    total = 0
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        total += getsizeof(item)
        kind = type(item)
        if kind in _ATOMS:
            continue
        if kind in _SEQUENCES:
            extend(item)
        elif kind is dict:
            extend(item.keys())
            extend(item.values())
        else:
            attributes = getattr(item, "__dict__", None)
            if attributes is not None:
                push(attributes)
            for name in getattr(kind, "__slots__", ()):
                push(getattr(item, name, None))
    return total
