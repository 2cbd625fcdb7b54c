"""Reading import files: NDJSON (one profile document a line) and CSV (one profile a row).

Each reader yields ``(line, record)`` where ``record`` is a prepared profile or the reason the
line cannot be loaded, so one bad line never stops the file. ``line`` is the 1-based line the
record starts on. CSV columns:

- an identifier type (``email``, ``phone``, ``crm_id``, ``guest_ref`` or a custom type matching
  ``[a-z][a-z0-9_]{0,31}``), or ``identifiers.<type>``;
- ``traits.<name>``: a number where the cell is a JSON number (``42``, ``-1.5``; not ``007``),
  ``true``/``false`` as booleans, a JSON array or object where the cell is one, else the text;
- ``metrics.<name>``: a number (or, for ``last_order_at``/``last_event_at``, an ISO 8601 time);
- ``segments``: ``;``-separated; ``recommendations``: a JSON array; ``source``: text.

An empty cell means "not given". Files are UTF-8 (a byte-order mark is fine).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from app.core.errors import AppError
from app.identity.identifiers import TYPE_PATTERN
from app.ingest.fast import RecordError, prepare_raw
from app.profiles.documents import PreparedProfile
from app.profiles.limits import passes_unwalked

Format = Literal["csv", "ndjson"]
Item = tuple[int, PreparedProfile | str]
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
SPECIAL = frozenset({"segments", "recommendations", "source"})
RESERVED = frozenset({"identifiers", "traits", "metrics"})


class ImportFileError(AppError):
    """The file as a whole cannot be imported (unreadable, unknown format, bad header)."""


def detect_format(path: Path, override: str | None) -> Format:
    if override:
        name = override.lower()
        if name in ("csv", "ndjson", "jsonl"):
            return "csv" if name == "csv" else "ndjson"
        raise ImportFileError(f"unknown format {override!r}: use csv or ndjson")
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(
            f"cannot tell the format of {path.name} from its extension; "
            "use .csv, .ndjson or .jsonl, or --format"
        )
    return found


class CountingReader:
    """Binary lines from a file, counting the bytes consumed (for the progress bar)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.position = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.handle:
            self.position += len(line)
            yield line


def read_ndjson(lines: CountingReader, region: str, source: str | None) -> Iterator[Item]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, f"invalid JSON: {str(exc).split(':')[0]}"
            continue
        if source is not None and type(raw) is dict and raw.get("source") is None:
            raw["source"] = source  # checked by the importer
        checked = passes_unwalked(line, extra_chars=len(source or ""))
        yield number, _prepare(raw, region, b"\\u0000" not in line, checked)


def _prepare(raw: Any, region: str, plain: bool, checked: bool = False) -> PreparedProfile | str:
    try:
        return prepare_raw(raw, region, plain=plain, checked=checked)
    except RecordError as exc:
        return str(exc)


@dataclass(frozen=True)
class Column:
    kind: Literal["identifier", "trait", "metric", "segments", "recommendations", "source"]
    name: str


def parse_header(header: list[str]) -> list[Column]:
    """Map each header cell to what it fills; an unknown or repeated column is fatal."""
    columns: list[Column] = []
    problems: list[str] = []
    for cell in header:
        name = cell.strip()
        lowered = name.lower()
        prefix, _, rest = name.partition(".")
        if lowered in SPECIAL:
            columns.append(Column(lowered, lowered))  # type: ignore[arg-type]
        elif prefix in ("traits", "metrics") and rest:
            columns.append(Column("trait" if prefix == "traits" else "metric", rest))
        elif prefix == "identifiers" and TYPE_PATTERN.match(rest.lower()):
            columns.append(Column("identifier", rest.lower()))
        elif not rest and lowered not in RESERVED and TYPE_PATTERN.match(lowered):
            columns.append(Column("identifier", lowered))
        else:
            problems.append(repr(name[:40]))
    if problems:
        raise ImportFileError(
            f"unknown CSV column(s) {', '.join(problems)}: use an identifier type, "
            "traits.<name>, metrics.<name>, segments, recommendations or source"
        )
    seen: set[Column] = set()
    for column in columns:
        if column in seen:
            raise ImportFileError(f"the CSV column {column.name!r} appears twice")
        seen.add(column)
    return columns


def read_csv(lines: CountingReader, region: str, source: str | None) -> Iterator[Item]:
    decoded = _decode(lines)
    reader = csv.reader(decoded, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportFileError(f"the CSV header cannot be read: {exc}") from exc
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    columns = parse_header(header)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, f"malformed CSV: {exc}"
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, or a row of empty cells
        if len(cells) != len(columns):
            yield line, f"expected {len(columns)} cells as in the header, found {len(cells)}"
            continue
        try:
            raw = csv_document(columns, cells, source)
        except RecordError as exc:
            yield line, str(exc)
            continue
        yield line, _prepare(raw, region, not any("\x00" in cell for cell in cells))


def _decode(lines: CountingReader) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"line {number} is not UTF-8 text") from exc


def csv_document(columns: list[Column], cells: list[str], source: str | None) -> dict[str, Any]:
    """One CSV row as a profile document."""
    identifiers: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    document: dict[str, Any] = {"identifiers": identifiers, "traits": traits, "metrics": metrics}
    for column, cell in zip(columns, cells, strict=True):
        text = cell.strip()
        if not text:
            continue
        kind = column.kind
        if kind == "identifier":
            identifiers[column.name] = text
        elif kind == "trait":
            traits[column.name] = trait_value(text)
        elif kind == "metric":
            metrics[column.name] = text
        elif kind == "segments":
            document["segments"] = [part.strip() for part in text.split(";") if part.strip()]
        elif kind == "recommendations":
            document["recommendations"] = _json_array(text)
        else:
            document["source"] = text
    if source is not None and document.get("source") is None:
        document["source"] = source
    return document


def trait_value(text: str) -> Any:
    """A trait cell: JSON numbers, booleans, arrays and objects keep their type; else text."""
    if NUMBER.match(text):
        if "." in text or "e" in text or "E" in text:
            number = float(text)
            return number if number not in (float("inf"), float("-inf")) else text
        return int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if text[0] in "[{":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def _json_array(text: str) -> list[Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise RecordError("recommendations must be a JSON array")
    return value


@dataclass
class Batch:
    items: list[Item]
    position: int


def batches(
    path: Path, file_format: Format, region: str, source: str | None, size: int
) -> Iterator[Batch]:
    """The file's records, ``size`` at a time (blocking: runs in the reader thread)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        lines = CountingReader(handle)
        read = read_csv if file_format == "csv" else read_ndjson
        items: list[Item] = []
        try:
            for item in read(lines, region, source):
                items.append(item)
                if len(items) >= size:
                    yield Batch(items, lines.position)
                    items = []
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if items:
            yield Batch(items, lines.position)
