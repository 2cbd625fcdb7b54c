"""Prepare profile documents for the bulk engine, cheaply where the document is plain.

``prepare(ProfileDocument.model_validate(raw))`` is the rule. At import rates (tens of
thousands of profiles a second) its pydantic round trip costs more than the database work, so
``prepare_raw`` first tries a direct path for the common shape: JSON-native values, numbers as
numbers, ISO 8601 timestamps. It must give exactly what the rule gives; anything it is not
sure about (an unknown field, a boolean metric, a NUL character...) goes the pydantic way,
which also words the error. tests/ingest/test_fast.py holds the two paths to each other.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.identity.identifiers import (
    BUILTIN_TYPES,
    MAX_VALUE_LENGTH,
    IdentifierError,
    Key,
    is_absent,
    normalize_type,
    normalize_value,
    with_derived,
)
from app.profiles.documents import PreparedProfile, column_value, prepare
from app.profiles.limits import UnstorableError, check_document
from app.profiles.schemas import (
    EVENT_METRICS,
    TIMESTAMP_METRICS,
    ProfileDocument,
    as_utc,
    event_metric,
    metric_number,
)

FIELDS = frozenset({"identifiers", "traits", "segments", "metrics", "recommendations", "source"})
# Timestamps the standard library parses exactly as pydantic does.
ISO_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})?$"
)


INFINITY = float("inf")
NANP_E164 = re.compile(r"^\+1[2-9][0-9]{2}[2-9][0-9]{6}$")
PLAIN_TYPES = frozenset({"crm_id", "guest_ref"})  # stored as given (trimmed)
TYPE_MEMO: dict[str, str] = {}


class Slow(Exception):
    """The document needs the full validation."""


class RecordError(ValueError):
    """A record that cannot be loaded; the message says why (no profile contents)."""


def prepare_raw(
    raw: Any, region: str, *, plain: bool = True, checked: bool = False
) -> PreparedProfile:
    """Validate and prepare one parsed document; raise RecordError when it cannot be loaded.

    ``plain`` promises what a strict JSON parser guarantees (orjson, not Python's ``json``):
    no NaN or infinite numbers, and no NUL character in any string (the caller checked the
    raw text for ``\u0000``). Without it every document takes the full path. ``checked``
    says the caller knows check_document would pass (see limits.passes_unwalked).
    """
    if type(raw) is dict and not checked:
        # Text no column holds, nesting past the limit: the record fails here, alone, rather
        # than its whole batch in the database (or the serializer) later.
        try:
            large = check_document(raw)
        except UnstorableError as exc:
            raise RecordError(str(exc)) from exc
        plain = plain and not large  # the full path makes them floats
    if plain and type(raw) is dict:
        try:
            return _direct(raw, region)
        except Slow:
            pass
        except IdentifierError as exc:
            raise RecordError(exc.message) from exc
    return prepare_document(raw, region)


def prepare_document(raw: Any, region: str) -> PreparedProfile:
    """The reference path: pydantic validation, then ``prepare``."""
    if not isinstance(raw, dict):
        raise RecordError("a profile document must be a JSON object")
    try:
        document = ProfileDocument.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(validation_message(exc)) from exc
    try:
        return prepare(document, region)
    except IdentifierError as exc:
        raise RecordError(exc.message) from exc


def validation_message(exc: ValidationError) -> str:
    """The first problem, as "where: what" (the values themselves are left out)."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    if len(loc) >= 2 and loc[0] == "metrics":
        # A metric is a union (number or timestamp): one error per member, so say it plainly.
        where, what = f"metrics.{loc[1]}", "must be a number (or an ISO 8601 timestamp)"
        errors = [e for e in errors if [str(p) for p in e["loc"][:2]] != loc[:2]]
    else:
        where, what = ".".join(loc), first["msg"].removeprefix("Value error, ")
        errors = errors[1:]
    more = f" (and {len(errors)} more)" if errors else ""
    return f"{where}: {what}{more}" if where else f"{what}{more}"


def _direct(raw: dict[str, Any], region: str) -> PreparedProfile:
    if not FIELDS.issuperset(raw):
        raise Slow
    identifiers = raw.get("identifiers", {})
    traits = raw.get("traits", {})
    segments = raw.get("segments", [])
    source = raw.get("source")
    if type(identifiers) is not dict or type(traits) is not dict or type(segments) is not list:
        raise Slow
    for value in identifiers.values():
        if type(value) is not str and type(value) is not int:
            raise Slow
    for segment in segments:
        if type(segment) is not str:
            raise Slow
    if source is not None and (type(source) is not str or len(source) > 100):
        raise Slow
    metrics, columns = _metrics(raw.get("metrics", {}))
    recommendations = _recommendations(raw.get("recommendations", []))
    # Last: the full path reports a payload problem before an identifier problem.
    return PreparedProfile(
        keys=keys_of(identifiers, region),
        traits=traits,
        segments=segments,
        metrics=metrics,
        recommendations=recommendations,
        source=source,
        columns=columns,
    )


def keys_of(identifiers: dict[str, Any], region: str) -> list[Key]:
    """``write_keys``, with shortcuts where its answer is known without the general rules.

    A type name is normalized once per name (a pure function, so a memo is exact). A string
    value without surrounding whitespace that is not a placeholder is present and its own
    stripped text; an E.164 North American number (``+1``, area code and exchange not starting
    with 0 or 1) is already what libphonenumber would make of it. Everything else goes through
    ``normalize_value``.
    """
    keys: list[Key] = []
    for raw_type, value in identifiers.items():
        id_type = TYPE_MEMO.get(raw_type)
        if id_type is None:
            id_type = normalize_type(raw_type)
            if len(TYPE_MEMO) < 1000:
                TYPE_MEMO[raw_type] = id_type
        if (
            type(value) is str
            and value
            and not value[0].isspace()
            and not value[-1].isspace()
            and not value.startswith("${")
            and len(value) <= MAX_VALUE_LENGTH
        ):
            if id_type == "phone":
                if not NANP_E164.match(value):
                    value = normalize_value(id_type, value, region)
            elif id_type in PLAIN_TYPES or id_type not in BUILTIN_TYPES:
                pass
            else:
                value = normalize_value(id_type, value, region)
        elif is_absent(value):
            continue
        else:
            value = normalize_value(id_type, value, region)
        keys.append((id_type, value))
    return with_derived(keys)


def _finite(value: float) -> float:
    # A numeric string may spell NaN or infinity ("nan", "1e999"); the full path refuses them.
    if value != value or value in (INFINITY, -INFINITY):
        raise Slow
    return value


def _metrics(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if type(raw) is not dict:
        raise Slow
    metrics: dict[str, Any] = {}
    columns: dict[str, Any] = {}
    for name, given in raw.items():
        value = _metric_value(name, given)
        if name in EVENT_METRICS:
            try:
                columns[name] = column_value(name, event_metric(name, value))
            except (ValueError, ArithmeticError) as exc:
                raise Slow from exc
        else:
            metrics[name] = value
    return metrics, columns


def _metric_value(name: str, given: Any) -> Any:
    kind = type(given)
    if given is None or kind is int or kind is float:
        return given
    if kind is str:
        if name in TIMESTAMP_METRICS and ISO_TIMESTAMP.match(given):
            return as_utc(datetime.fromisoformat(given))
        value = metric_number(given)
        if type(value) is int:
            return value
        if type(value) is float:
            return _finite(value)
    raise Slow


def _recommendations(raw: Any) -> list[dict[str, Any]]:
    if type(raw) is not list:
        raise Slow
    result: list[dict[str, Any]] = []
    for item in raw:
        if type(item) is not dict:
            raise Slow
        if _as_dumped(item):
            result.append(item)
            continue
        # pydantic's order: the declared fields (when given), then the extra ones as sent.
        out: dict[str, Any] = {}
        if "product_id" in item:
            product_id = item["product_id"]
            if product_id is not None and type(product_id) is not str:
                raise Slow
            out["product_id"] = product_id
        if "score" in item:
            score = item["score"]
            if score is not None:
                if type(score) is int:
                    score = float(score)
                elif type(score) is not float:
                    raise Slow
            out["score"] = score
        for key, value in item.items():
            if key != "product_id" and key != "score":
                out[key] = value
        result.append(out)
    return result


def _as_dumped(item: dict[str, Any]) -> bool:
    """Whether pydantic would hand ``item`` back unchanged (the usual case, and cheap to see)."""
    if tuple(item)[:2] != ("product_id", "score"):
        return False
    return type(item["product_id"]) is str and type(item["score"]) is float
