"""What a view is: a named, versioned selection of answer fields, and how it is read.

A view names fields in the grammar of ``fields`` (``traits.tier``, ``segments``), may rename
some of them to flat top-level keys (Personalize maps flat keys most simply) and may give a
default for a field the guest lacks. Compiled, a view is a ``Selection`` (``ViewSelection``)
whose cache key is its ``name@version``: a version never changes, so its answers can be cached
under that name for as long as any other answer.

A view may declare the consent ``purpose`` its answers serve (app/enrich/consent.py). Room is
left for what a view will later declare (per-field maximum ages): a
definition is a JSON object, and its reader refuses members it does not know, so a new member
is added here, with its rules, without a new table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.errors import AppError
from app.core.patterns import compiled
from app.enrich.fields import FIXED, ROOTS, FieldsError, Selection, parse_fields
from app.enrich.schemas import MAX_VIEW_NAME, VIEW_NAME, VIEW_REF_MAX_CHARS, VIEW_REF_PATTERN
from app.identity.identifiers import is_absent
from app.profiles.consent import check_purposes
from app.profiles.consent import rules as consent_rules

# Limits: a view is read on every request that names it, and every worker keeps them all.
MAX_VIEW_FIELDS = 50
MAX_FIELD_CHARS = 200
MAX_KEY_CHARS = 64
MAX_DEFAULT_BYTES = 1024  # one default, as JSON
MAX_DEFINITION_BYTES = 8192  # the whole definition, as JSON
NAME_PATTERN = f"^{VIEW_NAME}$"
# A renamed field's key: what a Personalize output mapping names.
KEY_PATTERN = f"^[A-Za-z_][A-Za-z0-9_]{{0,{MAX_KEY_CHARS - 1}}}$"
# Keys a rename may not take: the fixed keys, the roots, the cut marker and the no-consent
# marker (a view stored before consent existed keeps a `consent` key it had; its no-consent
# answer's marker then takes that key's place).
RESERVED_KEYS = frozenset((*FIXED, *ROOTS, "truncated", "consent"))
MEMBERS = frozenset(("fields", "rename", "defaults", "purpose"))

_NAME_RULE = compiled(NAME_PATTERN)
_REF_RULE = compiled(VIEW_REF_PATTERN)
_KEY_RULE = compiled(KEY_PATTERN)

# A reference to a view: its name and a version (None: the latest live one).
ViewRef = tuple[str, int | None]
Path = tuple[str, ...]  # a field as a path, its root first: ("traits", "tier")


class ViewError(AppError):
    """A view definition or reference that cannot be used (422)."""

    status_code = 422
    code = "invalid_view"


def ref_text(ref: ViewRef) -> str:
    name, version = ref
    return name if version is None else f"{name}@{version}"


def parse_ref(raw: Any) -> ViewRef | None:
    """A request's ``view`` (``name`` or ``name@version``); None when absent or a placeholder."""
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > VIEW_REF_MAX_CHARS or not _REF_RULE.match(raw):
        raise ViewError("view must be a view name, or name@version (e.g. web_offer@2)")
    text = raw.strip()
    if is_absent(text):
        return None
    name, _, version = text.partition("@")
    return name.lower(), int(version) if version else None


def check_name(name: str) -> str:
    """A new view's name (lower-cased), or a ``ViewError``."""
    if not _NAME_RULE.match(name):
        raise ViewError(
            f"a view name is a letter then up to {MAX_VIEW_NAME - 1} letters, digits or underscores"
        )
    return name.lower()


@dataclass(frozen=True)
class ViewSelection(Selection):
    """A compiled view version: the nested part of its answer as a ``Selection`` (its fields
    that are not renamed), its flat keys, and its defaults."""

    name: str = ""
    version: int = 0
    # (the field's path, its flat key), in the definition's order
    flat: tuple[tuple[Path, str], ...] = ()
    # defaults by path (JSON values); the roots that have fields left nested, in answer order
    defaults: Mapping[Path, Any] | None = None
    nested_roots: tuple[str, ...] = ()
    definition: Mapping[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _path(item: str) -> tuple[str, Path]:
    """A field in its normal form (``traits.tier``) and as a path; ``FieldsError`` if bad."""
    if not isinstance(item, str) or len(item) > MAX_FIELD_CHARS:
        raise ViewError(f"a view field is a string of at most {MAX_FIELD_CHARS} characters")
    parse_fields([item])  # the grammar of `fields`, and its errors
    parts = tuple(part.strip() for part in item.split("."))
    path = (parts[0].lower(), *parts[1:])
    if path[0] not in ROOTS:
        raise ViewError(
            f"a view field is in traits, metrics, segments or recommendations: {item!r}"
        )
    return ".".join(path), path


def normalize(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition as stored (fields in normal form), or a ``ViewError`` saying what is wrong.

    ``{"fields": [...], "rename": {field: key}, "defaults": {field: value}, "purpose": p}``
    (``purpose`` optional: a configured consent purpose).
    """
    unknown = set(definition) - MEMBERS
    if unknown:
        raise ViewError(f"unknown view member(s): {', '.join(sorted(unknown))}")
    raw_fields = definition.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise ViewError("a view needs fields: a list of field paths")
    if len(raw_fields) > MAX_VIEW_FIELDS:
        raise ViewError(f"a view has at most {MAX_VIEW_FIELDS} fields")
    try:
        fields = [_path(item)[0] for item in raw_fields]
    except FieldsError as exc:
        raise ViewError(exc.message) from exc
    if len(set(fields)) != len(fields):
        raise ViewError("a view names each field once")
    rename = _by_field(definition.get("rename"), "rename", fields)
    keys = list(rename.values())
    for key in keys:
        if not isinstance(key, str) or not _KEY_RULE.match(key) or key in RESERVED_KEYS:
            raise ViewError(
                f"rename to {str(key)[:70]!r}: a key is a letter or _ then up to "
                f"{MAX_KEY_CHARS - 1} letters, digits or _, and not one of "
                f"{', '.join(sorted(RESERVED_KEYS))}"
            )
    if len(set(keys)) != len(keys):
        raise ViewError("two fields are renamed to the same key")
    defaults = _by_field(definition.get("defaults"), "defaults", fields)
    for field, value in defaults.items():
        if value is None or len(orjson.dumps(value)) > MAX_DEFAULT_BYTES:
            raise ViewError(
                f"the default of {field} is not null and at most {MAX_DEFAULT_BYTES} bytes of JSON"
            )
    normal: dict[str, Any] = {"fields": fields, "rename": rename, "defaults": defaults}
    purpose = definition.get("purpose")
    if purpose is not None:
        try:
            check_purposes([purpose] if isinstance(purpose, str) else [repr(purpose)])
        except ValueError as exc:
            raise ViewError(f"purpose: {exc}") from exc
        normal["purpose"] = purpose
    if len(orjson.dumps(normal)) > MAX_DEFINITION_BYTES:
        raise ViewError(f"a view definition is at most {MAX_DEFINITION_BYTES} bytes of JSON")
    return normal


def _by_field(raw: Any, member: str, fields: Sequence[str]) -> dict[str, Any]:
    """``rename`` or ``defaults``: keys are fields of the view (in normal form)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ViewError(f"{member} maps a field of the view to a value")
    normal: dict[str, Any] = {}
    for item, value in raw.items():
        try:
            field = _path(item)[0]
        except FieldsError as exc:
            raise ViewError(exc.message) from exc
        if field not in fields:
            raise ViewError(f"{member} names {field}, which is not one of the view's fields")
        normal[field] = value
    return normal


def compile_view(name: str, version: int, definition: Mapping[str, Any]) -> ViewSelection:
    """A stored definition, ready to render answers (it was checked when it was stored).

    A purpose no longer configured counts as opt-in: without a rule, no consent is assumed."""
    rename: Mapping[str, str] = definition.get("rename") or {}
    purpose = definition.get("purpose")
    defaults: Mapping[str, Any] = definition.get("defaults") or {}
    nested = [field for field in definition["fields"] if field not in rename]
    base = parse_fields(nested) if nested else None
    roots = {_path(field)[1][0] for field in nested}
    return ViewSelection(
        paths=base.paths if base is not None else {root: [] for root in ROOTS},
        whole=base.whole if base is not None else frozenset(),
        key=(f"view:{name}@{version}",),
        name=name,
        version=version,
        flat=tuple((_path(f)[1], rename[f]) for f in definition["fields"] if f in rename),
        defaults={_path(field)[1]: value for field, value in defaults.items()},
        nested_roots=tuple(root for root in ROOTS if root in roots),
        definition=definition,
        purpose=purpose,
        opt_in=consent_rules().get(purpose, True) if purpose else False,
    )
