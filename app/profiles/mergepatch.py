"""JSON Merge Patch (RFC 7396)."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply ``patch`` to ``target``: objects merge member by member, null removes a member,
    and anything else (arrays included) replaces the target value.

    Iterative, so a deep patch cannot exhaust the stack (callers still bound the depth). The
    result shares the unchanged parts of ``target`` and the arrays and scalars of ``patch``;
    neither argument is modified.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    # (the object being built, the patch object merged into it)
    pending: list[tuple[dict[str, Any], dict[str, Any]]] = [(result, patch)]
    while pending:
        into, changes = pending.pop()
        for name, value in changes.items():
            if value is None:
                into.pop(name, None)
            elif isinstance(value, dict):
                current = into.get(name)
                merged = dict(current) if isinstance(current, dict) else {}
                into[name] = merged
                pending.append((merged, value))
            else:
                into[name] = value
    return result
