"""What a caller asks the answer to carry: ``fields`` read into a ``Selection``.

``fields`` names whole roots (``segments``) or dot paths into traits and metrics
(``traits.address.city``); the answer's fixed keys are always there. The grammar is the one
the OpenAPI document states (``FIELDS_PATTERN``), and a ``Selection`` has a hashable name, so
answers can be cached per selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.core.errors import AppError
from app.core.patterns import compiled
from app.enrich.schemas import FIELDS_PATTERN, MAX_FIELDS_ITEM, MAX_FIELDS_ITEMS, MAX_FIELDS_TEXT
from app.identity.identifiers import is_absent

ROOTS = ("traits", "metrics", "segments", "recommendations")
# Always in the answer; naming them in `fields` is allowed and changes nothing.
FIXED = ("found", "matched", "profile_id", "updated_at", "stale")
# The documented grammar (OpenAPI) of a `fields` string: whatever it allows, the parser takes.
FIELDS_RULE = compiled(FIELDS_PATTERN)


class FieldsError(AppError):
    status_code = 422
    code = "invalid_fields"


@dataclass(frozen=True)
class Selection:
    """What goes inside traits, metrics, segments and recommendations (``None``: everything)."""

    paths: dict[str, list[tuple[str, ...]]] | None = None
    whole: frozenset[str] = field(default_factory=frozenset)
    # A hashable name of the selection, for cache keys (``None``: everything).
    key: tuple[str, ...] | None = None
    # The consent purpose the answer serves (None: no consent check) and whether it is
    # opt-in; part of ``key`` whenever set (app/enrich/consent.py).
    purpose: str | None = None
    opt_in: bool = False


EVERYTHING = Selection()


def parse_fields(raw: Sequence[str] | str | None) -> Selection:
    """Read ``fields`` (a list or a comma-separated string); placeholders count as absent."""
    if raw is None:
        return EVERYTHING
    texts = _texts(raw)
    items = [item.strip() for text in texts for item in text.split(",") if not is_absent(item)]
    if not items:
        return EVERYTHING
    paths: dict[str, list[tuple[str, ...]]] = {root: [] for root in ROOTS}
    whole: set[str] = set()
    for item in items:
        parts = tuple(part.strip() for part in item.split("."))
        root = parts[0].lower()
        if root in FIXED and len(parts) == 1:
            continue
        if root not in ROOTS or not all(parts):
            raise FieldsError(
                f"unknown field {item[:60]!r}: use traits, traits.<name>, metrics, "
                "metrics.<name>, segments or recommendations"
            )
        if len(parts) == 1:
            whole.add(root)
        elif root in ("segments", "recommendations"):
            raise FieldsError(f"{root} is a list: select it whole, without a .<name>")
        else:
            paths[root].append(parts[1:])
    if not all(FIELDS_RULE.match(text) for text in texts):
        raise FieldsError("fields does not follow the documented grammar")  # a safety net
    return Selection(paths, frozenset(whole), tuple(sorted(set(items))))


def _texts(raw: Sequence[str] | str) -> Sequence[str]:
    """The strings of ``fields``, within the documented limits."""
    if isinstance(raw, str):
        if len(raw) > MAX_FIELDS_TEXT:
            raise FieldsError(f"fields is longer than {MAX_FIELDS_TEXT} characters")
        return (raw,)
    if len(raw) > MAX_FIELDS_ITEMS:
        raise FieldsError(f"at most {MAX_FIELDS_ITEMS} fields items")
    if any(len(text) > MAX_FIELDS_ITEM for text in raw):
        raise FieldsError(f"a fields item is longer than {MAX_FIELDS_ITEM} characters")
    return raw
