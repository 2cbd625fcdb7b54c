"""The answer a view gives: the fixed keys, its nested fields, its flat keys, its defaults.

``{"found", "matched", "profile_id", <the roots it leaves nested>, <its flat keys>,
"updated_at", "stale"}``. A root appears only when the view names a field in it that is not
renamed; a flat key is always there (its default, else null, when the guest lacks the value);
a nested field the guest lacks is left out unless it has a default. An unknown guest gets the
same keys: empty roots with the defaults put in, and the flat keys' defaults (else null).
"""

from __future__ import annotations

import copy
from typing import Any

from app.enrich.fields import Selection
from app.enrich.views.definition import Path, ViewSelection

_MISSING = object()
EMPTY: dict[str, Any] = {"traits": {}, "metrics": {}, "segments": [], "recommendations": []}


def _get(view: dict[str, Any] | None, path: Path) -> Any:
    """The value at ``path`` (its root first), or ``_MISSING`` (null counts as missing)."""
    value: Any = view
    for part in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return _MISSING if value is None else value


def _put(root: Any, path: Path, value: Any) -> Any:
    """``root`` (a root's value) with ``value`` at ``path`` (below the root) where it lacks
    one; ``root`` itself when the path runs through something that is not an object."""
    if not path:
        return value if root in (None, {}, []) else root
    target = root
    for part in path[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        elif not isinstance(child, dict):
            return root
        target = child
    target.setdefault(path[-1], value)
    return root


def view_document(
    match: tuple[str, dict[str, Any]] | None,
    view: ViewSelection,
    pick: Any,
) -> dict[str, Any]:
    """The answer for ``view`` as a dict (``pick(root, value, selection)``: the nested part of
    a root, ``document._select``); ``match``: the matched type and the profile's view."""
    source = match[1] if match is not None else None
    document: dict[str, Any] = {
        "found": match is not None,
        "matched": match[0] if match is not None else None,
        "profile_id": source["profile_id"] if source is not None else None,
    }
    defaults = view.defaults or {}
    flat_paths = {path for path, _ in view.flat}
    for root in view.nested_roots:
        value = pick(root, source[root], view) if source is not None else _empty(root)
        copied = False
        for path, default in defaults.items():
            if path[0] != root or path in flat_paths or _get(source, path) is not _MISSING:
                continue
            if not copied:  # (what was picked may hold the profile's own objects)
                value, copied = copy.deepcopy(value), True
            value = _put(value, path[1:], default)
        document[root] = value
    for path, key in view.flat:
        value = _get(source, path)
        document[key] = defaults.get(path) if value is _MISSING else value
    document["updated_at"] = source["updated_at"] if source is not None else None
    document["stale"] = False
    return document


def _empty(root: str) -> Any:
    return {} if root in ("traits", "metrics") else []


def is_view(selection: Selection) -> bool:
    return isinstance(selection, ViewSelection)
