"""What a stored JSON document may hold: text both backends store, bounded nesting and size.

PostgreSQL refuses U+0000 in JSON and text, and no backend can encode a lone surrogate
(``"\\ud800"``, which Python's JSON parser lets through) as UTF-8; a number that is NaN or
infinite is not JSON. A document nested hundreds of levels deep passes pydantic but not its
serializer or orjson's (both stop near 255 levels), and walking it recursively can exhaust the
stack. So every document a caller writes (PUT, PATCH and its result, bulk records, import
records, events) is walked once here, iteratively, before anything stores or serializes it,
and a problem is a payload error that names where it is, never the content itself.

The limits are settings (``ENRICH_DOCUMENT_MAX_DEPTH``, ``ENRICH_DOCUMENT_MAX_CHARS``); a
process applies them with ``configure`` when it starts (the API in create_app, ``enrich
import`` and its reader process before reading).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# orjson writes integers in this range; larger ones are kept as floats.
INT_RANGE = (-(2**63), 2**64 - 1)
SURROGATE = re.compile("[\ud800-\udfff]")
SHOWN_SEGMENTS = 4  # a path in a message: its first members, then "..."
SHOWN_NAME = 40  # characters of one member name in a message


@dataclass(frozen=True)
class DocumentLimits:
    # Levels of objects and arrays, the document itself the first: {"traits": {"a": 1}} is 2.
    max_depth: int = 32
    # Characters of every string and member name in the document together (the PUT body
    # limit, 1 MB, bounds a PUT; this holds a bulk or import record to about the same).
    max_chars: int = 1_000_000


_active = DocumentLimits()


def configure(limits: DocumentLimits) -> None:
    """Apply the process's limits (from its settings) to every document checked from now on."""
    global _active
    _active = limits


def active() -> DocumentLimits:
    return _active


class UnstorableError(ValueError):
    """A document no column can hold; the message says where (never what)."""


def fit_int(value: int, where: str) -> int | float:
    """An integer the answers can carry: beyond 64 bits it becomes a float (JSON's number)."""
    if INT_RANGE[0] <= value <= INT_RANGE[1]:
        return value
    try:
        return float(value)
    except OverflowError as exc:
        raise UnstorableError(f"{where} holds a number that is too large") from exc


def storable_text(text: str) -> bool:
    """No NUL and no lone surrogate (the ASCII test is a fast C scan; most text is ASCII)."""
    return "\x00" not in text and (text.isascii() or SURROGATE.search(text) is None)


Path = tuple[str | int, ...]


def describe(path: Path, prefix: str = "") -> str:
    """``traits.prefs``, ``recommendations[0].product_id``; long paths and names are cut."""
    parts = [prefix] if prefix else []
    for segment in path[:SHOWN_SEGMENTS]:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            name = segment if len(segment) <= SHOWN_NAME else segment[:SHOWN_NAME] + "..."
            parts.append(f".{name}" if parts else name)
    if len(path) > SHOWN_SEGMENTS:
        parts.append("...")
    return "".join(parts) or "the document"


def check_document(document: Any, limits: DocumentLimits | None = None, *, where: str = "") -> bool:
    """Raise UnstorableError unless every value of ``document`` can be stored and served.

    Walks iteratively (any depth is safe to check) and stops at the first problem. Returns
    whether the document holds integers past 64 bits, which orjson cannot write: the caller
    makes them floats where they are content (``fit_ints``), not where digits matter (an
    identifier is its text). ``where`` prefixes the paths in messages.
    """
    limits = limits or _active
    if not isinstance(document, dict | list):
        _check_scalar(document, (), where)
        return False
    max_depth = limits.max_depth
    chars = 0
    large = False
    # (container, its level, its path); a path is built only for containers. Hot in imports:
    # one loop for both container types (an object's members, an array's items by index),
    # types compared with `is`, and text tested inline.
    stack: list[tuple[Any, int, Path]] = [(document, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        named = type(item) is dict
        for key, child in item.items() if named else enumerate(item):
            # A member name: JSON's are strings (a Python caller's may not be). `named` first:
            # an array's index skips the type() call (a third of a flat array's walk).
            if named and type(key) is str:
                chars += len(key)
                if "\x00" in key or (not key.isascii() and SURROGATE.search(key)):
                    raise UnstorableError(
                        f"a member name in {describe(path, where)} holds {_problem(key)}"
                    )
            kind = type(child)
            if kind is str:
                chars += len(child)
                if "\x00" in child or (not child.isascii() and SURROGATE.search(child)):
                    raise UnstorableError(_text_error(child, path, key, where))
            elif kind is dict or kind is list:
                if depth >= max_depth:
                    raise UnstorableError(_depth_error(path, key, where, max_depth))
                stack.append((child, depth + 1, (*path, key)))
            elif kind is float:
                if child - child != 0.0:  # NaN or infinite (no call, unlike isfinite)
                    raise UnstorableError(_not_finite(path, key, where))
            elif kind is int and not INT_RANGE[0] <= child <= INT_RANGE[1]:
                large = True
        if chars > limits.max_chars:
            raise UnstorableError(
                f"{describe((), where)} holds more than {limits.max_chars} characters of "
                "text (strings and member names together)"
            )
    return large


def passes_unwalked(text: bytes, *, extra_chars: int = 0) -> bool:
    """Whether what orjson parsed from ``text`` passes check_document, seen without a walk.

    orjson refuses lone surrogates, NaN and infinities and makes integers past 64 bits
    floats; a NUL can only come from a ``\\u0000`` escape; the characters cannot outnumber
    the bytes, nor the levels the brackets. Three C scans of the text instead of a Python walk
    of every value (about half the cost of preparing an import record; tests/ingest holds the
    two to the same answers). False means: walk it. ``extra_chars``: text the caller adds.
    """
    limits = _active
    return (
        len(text) + extra_chars <= limits.max_chars
        and b"\\u0000" not in text
        and text.count(b"[") + text.count(b"{") <= limits.max_depth
    )


def _problem(text: str) -> str:
    return "a NUL character" if "\x00" in text else "a lone surrogate (not UTF-8 text)"


def _text_error(text: str, path: Path, key: str | int, where: str) -> str:
    return f"{describe((*path, key), where)} holds {_problem(text)}"


def _depth_error(path: Path, key: str | int, where: str, max_depth: int) -> str:
    return (
        f"{describe((*path, key), where)} nests deeper than the {max_depth} levels "
        "a document may have"
    )


def _not_finite(path: Path, key: str | int, where: str) -> str:
    return f"{describe((*path, key), where)} holds a number that is not finite"


def _check_scalar(value: Any, path: Path, where: str) -> None:
    if isinstance(value, str) and not storable_text(value):
        raise UnstorableError(f"{describe(path, where)} holds {_problem(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnstorableError(f"{describe(path, where)} holds a number that is not finite")
