"""Reading and preparing a large file in a separate process (PostgreSQL imports).

Parsing, validating and serializing a profile costs about as much Python time as writing it;
in one process the two would take turns holding the GIL. A reader process does the first half
and hands over batches whose content is already JSON text, ready for COPY, so the importer's
own process only plans and writes.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from app.ingest.readers import Format, ImportFileError, Item
from app.ingest.store_pg import Texts, texts_of
from app.profiles.documents import PreparedProfile

# One record on the wire: (line, error) or (line, keys, texts, source, columns).
Wire = tuple[Any, ...]


@dataclass
class EncodedProfile(PreparedProfile):
    """A prepared profile whose JSON content travels as text; only the PostgreSQL store takes it.

    ``traits``, ``segments``, ``metrics`` and ``recommendations`` stay empty: the text is the
    content.
    """

    texts: Texts = ("{}", "[]", "{}", "[]")


def _encode(items: list[Item]) -> bytes:
    wire: list[Wire] = []
    for line, record in items:
        if isinstance(record, str):
            wire.append((line, record))
        else:
            columns = tuple(record.columns.items())
            wire.append((line, tuple(record.keys), texts_of(record), record.source, columns))
    return pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)


def decode(payload: bytes) -> list[Item]:
    items: list[Item] = []
    for entry in pickle.loads(payload):
        if len(entry) == 2:
            items.append((entry[0], entry[1]))
            continue
        line, keys, texts, source, columns = entry
        record = EncodedProfile(list(keys), {}, [], {}, [], source, dict(columns), texts)
        items.append((line, record))
    return items


def _send(out: BinaryIO, kind: str, payload: bytes, position: int) -> None:
    frame = pickle.dumps((kind, payload, position), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(frame).to_bytes(8, "big"))
    out.write(frame)
    out.flush()


def main(argv: list[str]) -> None:
    """The reader process: framed (kind, payload, position) messages on standard output."""
    from app.ingest.importer import batches

    path, file_format, region, source, size = argv
    out = sys.stdout.buffer
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


class ProcessReader:
    """Runs the reader process; ``receive`` blocks for its next message (call it in a thread)."""

    def __init__(
        self, path: Path, file_format: Format, region: str, source: str | None, size: int
    ) -> None:
        command = [sys.executable, "-m", "app.ingest.parallel"]
        command += [str(path), file_format, region, source or "", str(size)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        self._out = self.process.stdout

    def receive(self) -> tuple[str, bytes, int]:
        head = self._out.read(8)
        if len(head) < 8:
            return ("fatal", b"the reader process stopped", 0)
        frame = self._out.read(int.from_bytes(head, "big"))
        message: tuple[str, bytes, int] = pickle.loads(frame)
        return message

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)
        self._out.close()


if __name__ == "__main__":
    main(sys.argv[1:])
