"""What ``enrich import`` shows: a progress bar with rows per second, then a summary."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.core.settings import Settings
from app.enrich.cache.remote import RemoteInvalidator
from app.identity.identifiers import Key
from app.ingest.importer import ImportReport, Invalidate, import_file

SHOWN_ERRORS = 20


def run_import(
    path: Path,
    settings: Settings,
    *,
    file_format: str | None,
    source: str | None,
    batch_size: int,
    console: Console,
) -> ImportReport:
    """Import with a live progress bar on ``console`` (the bar tracks bytes of the file)."""
    size = path.stat().st_size if path.is_file() else None
    # Piped or captured output gets the summary only, not a bar redrawn into a log.
    progress = Progress(
        TextColumn("[bold]importing[/bold] {task.description}"),
        BarColumn(bar_width=30),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:>11,} rows {task.fields[rate]:>8,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    task = progress.add_task(path.name, total=size, rows=0, rate=0.0)

    def advance(rows: int, position: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0.0
        rate = rows / elapsed if elapsed else 0.0
        progress.update(task, completed=position, rows=rows, rate=rate)

    async def work() -> ImportReport:
        invalidate, close = cache_invalidator(settings)
        try:
            return await import_file(
                path,
                settings,
                file_format=file_format,
                source=source,
                batch_size=batch_size,
                progress=advance,
                invalidate=invalidate,
            )
        finally:
            await close()

    with progress:
        report = asyncio.run(work())
        progress.update(task, completed=size, rows=report.rows, rate=report.rate)
    return report


def print_report(report: ImportReport, console: Console, errors: Console) -> None:
    """Totals, then the first bad lines with their numbers and how many more there are."""
    console.print(
        f"{report.rows:,} rows in {report.seconds:.1f} s ({report.rate:,.0f} rows/s): "
        f"{report.created:,} created, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged, {report.failed:,} failed"
    )
    if not report.failed:
        return
    for line, reason in report.errors[:SHOWN_ERRORS]:
        errors.print(f"line {line}: {reason}", markup=False, highlight=False, soft_wrap=True)
    hidden = report.failed - min(SHOWN_ERRORS, len(report.errors))
    if hidden > 0:
        errors.print(f"... and {hidden:,} more bad rows", highlight=False)


Closer = Callable[[], Awaitable[None]]


def cache_invalidator(settings: Settings) -> tuple[Invalidate | None, Closer]:
    """Drop cached enrich answers in Redis and in every server process's own cache.

    Without Redis there is no shared cache to reach (the embedded server's answers expire on
    their own). A failure is reported once and the import goes on: the data is saved.
    """
    if not settings.redis_dsn:

        async def nothing() -> None:
            return None

        return None, nothing
    remote = RemoteInvalidator(settings)
    warned = False

    async def invalidate(keys: list[Key]) -> None:
        nonlocal warned
        try:
            await remote.invalidate(keys)
        except Exception as exc:
            if not warned:
                warned = True
                print(
                    f"warning: cached answers could not be dropped ({type(exc).__name__}); "
                    "they expire on their own",
                    file=sys.stderr,
                )

    return invalidate, remote.close
