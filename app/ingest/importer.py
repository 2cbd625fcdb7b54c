"""``enrich import``: stream a file through the bulk engine, one transaction per batch.

A thread (or, for a large file, a process) reads and prepares the next batch while the
database writes the current one, so parsing and PostgreSQL work side by side on two cores.
Every batch commits on its own and then drops the cached enrich answers of the profiles it
changed; the exception is an initial load into an empty identifiers table on PostgreSQL, which
runs in one transaction and builds the identifiers' indexes at the end (app/ingest/initial.py).
A bad line fails alone; it is reported with its line number and the rest of the file still
loads. Running the same file
again changes nothing (every record comes back "unchanged").
"""

from __future__ import annotations

import asyncio
import gc
import queue
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.identity.identifiers import Key
from app.ingest.initial import InitialLoad
from app.ingest.parallel import ProcessReader, decode
from app.ingest.readers import (
    Batch,
    Format,
    ImportFileError,
    Item,
    batches,
    detect_format,
)
from app.profiles.bulk.plan import BulkResult
from app.profiles.bulk.upsert import upsert_prepared
from app.profiles.consent import configure as configure_consent
from app.profiles.limits import DocumentLimits, storable_text
from app.profiles.limits import configure as configure_limits

DEFAULT_BATCH = 10_000
# Below this a second process costs more to start than it saves.
PROCESS_READER_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 1000  # kept for the report; the count covers all of them

Progress = Callable[[int, int], None]  # rows read so far, bytes read so far
Invalidate = Callable[[list[Key]], Awaitable[None]]


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, why), the first ones
    seconds: float = 0.0

    @property
    def loaded(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def add(self, result: BulkResult) -> None:
        self.rows += len(result.results)
        self.created += result.created
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.failed += result.failed
        room = MAX_ERRORS - len(self.errors)
        if room > 0 and result.failed:
            failures = [(o.index, o.error or "failed") for o in result.results if o.error]
            self.errors.extend(failures[:room])


class Reader(threading.Thread):
    """Fills a small queue with prepared batches; an error is handed over, not lost."""

    END = object()

    def __init__(self, source: Iterator[Batch]) -> None:
        super().__init__(name="enrich-import-reader", daemon=True)
        self.source = source
        self.queue: queue.Queue[object] = queue.Queue(maxsize=2)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.source:
                if not self._put(batch):
                    return
            self._put(self.END)
        except BaseException as exc:  # handed to the event loop, which raises it
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


async def import_file(
    path: Path,
    settings: Settings,
    *,
    file_format: str | None = None,
    source: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    invalidate: Invalidate | None = None,
) -> ImportReport:
    """Load ``path`` (CSV or NDJSON) into the database; raise ImportFileError if it cannot."""
    chosen = await _checked(path, settings, file_format, source)
    # A large batch may take longer than the API's statement timeout.
    engine = create_engine(settings.model_copy(update={"db_statement_timeout_ms": 0}))
    sessions = create_sessionmaker(engine)
    next_batch = await _read_ahead(path, chosen, settings, source, batch_size)
    report = ImportReport()
    started = time.perf_counter()
    initial = None if settings.is_sqlite else await InitialLoad.start(sessions)
    # Many small objects live briefly here; the cyclic GC would keep rescanning them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while (batch := await anext(next_batch)) is not None:
            if initial is not None:
                result = await initial.load(batch.items)
            else:
                result = await _commit_batch(sessions, settings, batch.items)
            report.add(result)
            report.seconds = time.perf_counter() - started
            # In the initial load the batch is not committed yet; its readers wait on the lock.
            if invalidate is not None and result.changed_keys:
                await invalidate(result.changed_keys)
            if progress is not None:
                progress(report.rows, batch.position)
        if initial is not None:
            await initial.commit()
            initial = None
    finally:
        if initial is not None:
            await initial.abandon()
        await next_batch.aclose()
        if gc_was_enabled:
            gc.enable()
        await engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


async def _checked(
    path: Path, settings: Settings, file_format: str | None, source: str | None
) -> Format:
    """The file's format, once the import's arguments are found usable (ImportFileError)."""
    chosen = detect_format(path, file_format)
    # Here and (from these) in a reader process.
    configure_limits(DocumentLimits(settings.document_max_depth, settings.document_max_chars))
    configure_consent(settings.consent_rules)
    if source is not None and not storable_text(source):  # argv may carry a lone surrogate
        raise ImportFileError("--source must be UTF-8 text without NUL characters")
    if not await asyncio.to_thread(path.is_file):
        raise ImportFileError(f"cannot read {path}: no such file")
    return chosen


async def _read_ahead(
    path: Path, chosen: Format, settings: Settings, source: str | None, batch_size: int
) -> AsyncGenerator[Batch | None, None]:
    """The file's prepared batches (then None), read and prepared a batch ahead.

    By a process for a large file on PostgreSQL, by a thread otherwise.
    """
    region = settings.default_phone_region
    size = (await asyncio.to_thread(path.stat)).st_size
    if not settings.is_sqlite and size >= PROCESS_READER_BYTES:
        return _from_process(ProcessReader(path, chosen, region, source, batch_size))
    return _from_thread(Reader(batches(path, chosen, region, source, batch_size)))


async def _commit_batch(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, items: list[Item]
) -> BulkResult:
    """Upsert one batch in a transaction of its own."""
    async with sessions() as session:
        if not settings.is_sqlite:
            # The import reports only after its last commit, and a crash mid-file is
            # recovered by running it again (it is idempotent), so a commit need not
            # wait for its WAL flush.
            await session.execute(text("SET LOCAL synchronous_commit = off"))
        result = await upsert_prepared(session, items)
        await session.commit()
    return result


async def _from_thread(reader: Reader) -> AsyncGenerator[Batch | None, None]:
    # The reader thread should hand the GIL back quickly when a database reply arrives.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    reader.start()
    try:
        while True:
            item = await asyncio.to_thread(reader.queue.get)
            if item is Reader.END:
                yield None
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Batch)
            yield item
    finally:
        reader.stopped.set()
        sys.setswitchinterval(switch_interval)


def _received(reader: ProcessReader) -> Iterator[Batch]:
    """The reader process's batches, decoded (runs in the Reader thread).

    Decoding here, a batch ahead, keeps it off the event loop: it happens while the loop waits
    for PostgreSQL to take the previous batch.
    """
    while True:
        kind, payload, position = reader.receive()
        if kind == "batch":
            yield Batch(decode(payload), position)
        elif kind == "end":
            return
        else:
            raise ImportFileError(payload.decode())


async def _from_process(reader: ProcessReader) -> AsyncGenerator[Batch | None, None]:
    try:
        async for batch in _from_thread(Reader(_received(reader))):
            yield batch
    finally:
        await asyncio.to_thread(reader.close)
