"""Reading and preparing a large file in a separate process (PostgreSQL imports).

Parsing, validating and serializing a profile costs about as much Python time as writing it;
in one process the two would take turns holding the GIL. A reader process does the first half
and hands over batches whose content is already JSON text, ready for COPY, so the importer's
own process only plans and writes.
"""

from __future__ import annotations

import gc
import marshal
import os
import pickle
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from app.core.fdio import read_exactly, write_all
from app.core.purposes import parse_purposes
from app.ingest.readers import Format, ImportFileError, Item, batches
from app.profiles.bulk.pg import (
    EVENT_COLUMNS,
    NULL,
    EncodedProfile,
    Texts,
    field,
    json_field,
    plain,
    texts_of,
)
from app.profiles.consent import ConsentDecision
from app.profiles.consent import configure as configure_consent
from app.profiles.consent import rules as consent_rules
from app.profiles.limits import DocumentLimits
from app.profiles.limits import active as active_limits
from app.profiles.limits import configure as configure_limits

# One record on the wire: (line, error), or
# (line, keys, source, names of the event metrics it sets, profile id, profile row, key lines).
# Few objects per record: encoding cost follows the object count more than the bytes.
Wire = tuple[Any, ...]
NO_TEXTS: Texts = ("{}", "[]", "{}", "[]")


VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def profile_ids(count: int) -> list[str]:
    """``count`` ids in ``new_profile_id``'s layout, made a batch at a time (it is hot).

    One timestamp for the batch (its profiles sit together in the primary key), then 74
    random bits each: version 7, variant 10.
    """
    millis = f"{time.time_ns() // 1_000_000:012x}"
    head = f"{millis[:8]}-{millis[8:]}-7"
    rand = os.urandom(10 * count).hex()
    ids = []
    for i in range(0, 20 * count, 20):
        r = rand[i : i + 19]
        ids.append(f"{head}{r[:3]}-{VARIANT[r[3]]}{r[4:7]}-{r[7:]}")
    return ids


def _encode(items: list[Item]) -> bytes:
    wire: list[Wire] = []
    append = wire.append
    ids = iter(profile_ids(len(items)))
    escaped_types: dict[str, str] = {}
    for line, record in items:
        if isinstance(record, str):
            append((line, record))
            continue
        try:
            texts = texts_of(record)
        except orjson.JSONEncodeError:  # validation refuses what orjson cannot write; a net
            append((line, "the record cannot be written as JSON"))
            continue
        pid = next(ids)
        columns = record.columns
        source = record.source
        cells = [
            NULL
            if (value := columns.get(name)) is None
            else value.isoformat()
            if type(value) is datetime
            else str(value)
            for name in EVENT_COLUMNS
        ]
        row = "\t".join(
            (
                pid,
                *[json_field(text) for text in texts],
                NULL if source is None else field(source),
                *cells,
            )
        )
        keys = record.keys
        key_lines = []
        for t, v in keys:
            escaped = escaped_types.get(t)
            if escaped is None:
                escaped = escaped_types[t] = field(t)
            value = v if plain(v) else field(v)
            key_lines.append(f"{escaped}\t{value}\t{pid}\n")
        candidate = int(pid.replace("-", ""), 16)
        consent = _consent_wire(record.consent)
        append(
            (line, tuple(keys), source, tuple(columns), candidate, row, tuple(key_lines), consent)
        )
    # marshal: twice as fast as pickle for plain tuples of strings, and both ends are this
    # same Python (a child process of the importer).
    return marshal.dumps(wire)


def _consent_wire(
    decisions: dict[str, ConsentDecision] | None,
) -> tuple[tuple[str, str, str | None, str | None], ...]:
    """A record's consent decisions as marshal carries them (empty: none)."""
    if not decisions:
        return ()
    return tuple(
        (purpose, d.status, d.at.isoformat() if d.at else None, d.source)
        for purpose, d in decisions.items()
    )


def _uuid(value: int) -> uuid.UUID:
    """uuid.UUID(int=value) without its argument checks (the value is ours): hot in decode."""
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def decode(payload: bytes) -> list[Item]:
    items: list[Item] = []
    append = items.append
    for entry in marshal.loads(payload):
        if len(entry) == 2:
            append((entry[0], entry[1]))
            continue
        line, keys, source, named, candidate, row, key_lines, consent = entry
        record = EncodedProfile(list(keys), source, named, _uuid(candidate), row, key_lines)
        if consent:
            record.consent = {
                purpose: ConsentDecision(status=status, at=at, source=by)
                for purpose, status, at, by in consent
            }
        append((line, record))
    return items


def _send(fd: int, kind: str, payload: bytes, position: int) -> None:
    frame = pickle.dumps((kind, payload, position), protocol=pickle.HIGHEST_PROTOCOL)
    write_all(fd, len(frame).to_bytes(8, "big") + frame)


def main(argv: list[str]) -> None:
    """The reader process: framed (kind, payload, position) messages on standard output."""
    path, file_format, region, source, size, fd, max_depth, max_chars, purposes = argv
    configure_limits(DocumentLimits(int(max_depth), int(max_chars)))
    configure_consent(parse_purposes(purposes))
    # Frames go to a pipe of their own: nothing else the process prints can land among them.
    out = int(fd)
    # Every object here is short-lived and acyclic; the cyclic GC would only rescan them.
    gc.disable()
    chosen: Format = "csv" if file_format == "csv" else "ndjson"
    try:
        for batch in batches(Path(path), chosen, region, source or None, int(size)):
            _send(out, "batch", _encode(batch.items), batch.position)
        _send(out, "end", b"", 0)
    except ImportFileError as exc:
        _send(out, "fatal", exc.message.encode(), 0)
    except BrokenPipeError:
        return  # the importer stopped listening
    except Exception as exc:
        _send(out, "fatal", f"the reader failed: {exc!r}".encode(), 0)


def _purposes_text() -> str:
    """The importer's consent purposes, passed on to the reader process."""
    return ",".join(
        f"{purpose}:{'opt-in' if opt_in else 'opt-out'}"
        for purpose, opt_in in consent_rules().items()
    )


class ProcessReader:
    """Runs the reader process; ``receive`` blocks for its next message (call it in a thread)."""

    def __init__(
        self, path: Path, file_format: Format, region: str, source: str | None, size: int
    ) -> None:
        limits = active_limits()  # the importer's, passed on
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "app.ingest.parallel"]
        command += [str(path), file_format, region, source or "", str(size), str(write_end)]
        command += [str(limits.max_depth), str(limits.max_chars), _purposes_text()]
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, pass_fds=(write_end,)
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child holds it; the stream ends when the child does
        self._in = read_end

    def receive(self) -> tuple[str, bytes, int]:
        head = read_exactly(self._in, 8)
        if len(head) < 8:
            return ("fatal", b"the reader process stopped", 0)
        size = int.from_bytes(head, "big")
        frame = read_exactly(self._in, size)
        if len(frame) < size:
            return ("fatal", b"the reader process stopped", 0)
        message: tuple[str, bytes, int] = pickle.loads(frame)
        return message

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)
        if self._in >= 0:
            os.close(self._in)
            self._in = -1


if __name__ == "__main__":
    main(sys.argv[1:])
