"""Reading a bulk request: NDJSON or a JSON array, each record validated on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from app.core.errors import AppError
from app.profiles.schemas import BulkRecord, ProfileDocument

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
JSON_TYPES = ("application/json",)
JSON_WHITESPACE = b" \t\r\n"


class BulkBodyError(AppError):
    status_code = 400
    code = "invalid_body"


class TooManyRecordsError(AppError):
    status_code = 413
    code = "payload_too_large"


@dataclass
class ParsedBulk:
    documents: list[tuple[int, ProfileDocument]] = field(default_factory=list)
    failures: list[BulkRecord] = field(default_factory=list)


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def split_records(body: bytes, content_type: str | None) -> list[bytes | Any]:
    """Raw NDJSON lines (parsed later, one by one) or the items of a JSON array.

    A body with nothing in it (or only whitespace) is refused: it is a client's mistake, not an
    empty batch (an empty batch is ``[]``). Blank means JSON's whitespace only: a line of
    other bytes (a form feed, say) is a record that fails, not one that is skipped.
    """
    kind = media_type(content_type)
    if kind in NDJSON_TYPES:
        lines = [line for line in body.split(b"\n") if line.strip(JSON_WHITESPACE)]
        if not lines:
            raise BulkBodyError("the body holds no records: send one profile document a line")
        return lines
    if kind in JSON_TYPES or kind.endswith("+json"):
        if not body.strip(JSON_WHITESPACE):
            raise BulkBodyError("the body is empty: send an array of profile documents")
        try:
            items = parse_json(body)
        except orjson.JSONDecodeError as exc:
            raise BulkBodyError(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(items, list):
            raise BulkBodyError("a JSON bulk body must be an array of profile documents")
        return items
    raise AppError(
        "send application/x-ndjson (one document a line) or application/json (an array)",
        status_code=415,
        code="unsupported_media_type",
    )


def parse_json(text: bytes) -> Any:
    """Parse with orjson; what only it refuses is parsed again so the document check names it.

    orjson refuses a lone surrogate (``"\\ud800"``), NaN and Infinity; Python's parser takes
    them and the document check then refuses them naming where: a bulk record fails alone (in
    a JSON array, one such record would otherwise sink the whole body), and a PATCH gets the
    422 that a PUT of the same content gets (FastAPI reads a PUT with Python's parser). Raises
    orjson's error when neither parser reads ``text``.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(text.decode("utf-8"))  # UTF-8 only, as orjson
        except (ValueError, RecursionError):
            raise exc from None


def _message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"])
        what = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)


def parse_bulk(body: bytes, content_type: str | None, max_records: int) -> ParsedBulk:
    """Validate every record; a bad one becomes a failure with its index, the rest go on."""
    records = split_records(body, content_type)
    if len(records) > max_records:
        raise TooManyRecordsError(
            f"{len(records)} records: a bulk request holds at most {max_records}"
        )
    parsed = ParsedBulk()
    for index, record in enumerate(records):
        item = record
        if isinstance(record, bytes):
            try:
                item = parse_json(record)
            except orjson.JSONDecodeError as exc:
                parsed.failures.append(
                    BulkRecord(index=index, status="failed", error=f"invalid JSON: {exc}")
                )
                continue
        if not isinstance(item, dict):
            parsed.failures.append(
                BulkRecord(index=index, status="failed", error="a record must be a JSON object")
            )
            continue
        try:
            parsed.documents.append((index, ProfileDocument.model_validate(item)))
        except ValidationError as exc:
            parsed.failures.append(BulkRecord(index=index, status="failed", error=_message(exc)))
    return parsed
