"""What every command group shares: the consoles, the settings, one committed transaction per
command, listings that a pipe reads whole, and URLs shown without their password.

Nothing of the service is imported when ``enrich`` starts: each helper loads what it needs when
a command calls it, so ``enrich --version`` and ``enrich --help`` stay fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.settings import Settings

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

MASK = "**********"
# Control characters that would split a plain line or column, written as escapes instead.
_PLAIN_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def load_settings() -> Settings:
    """The settings from the environment and ``.env`` (read once per process)."""
    # start-up: pydantic-settings and the settings' validators load when a command runs.
    from app.core.settings import get_settings

    return get_settings()


def run_in_session(
    work: Callable[[AsyncSession, Settings], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Run ``work`` in one committed transaction; domain errors end the command with code 1."""
    # start-up: SQLAlchemy and the database drivers load when a command runs.
    from app.core.db import create_engine, create_sessionmaker
    from app.core.errors import AppError
    from app.profiles.consent import configure as configure_consent

    settings = settings or load_settings()
    configure_consent(settings.consent_rules)  # the purposes writes and views may name

    async def runner() -> T:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                result = await work(session, settings)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(runner())
    except AppError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


def print_listing(console: Console, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table for people at a terminal; for a pipe, one tab-separated line per row.

    Read through a pipe rich sizes a table to 80 columns and cuts values (``enr_91edc8…``), so
    ``grep`` or ``cut`` could not find a client: there every value is printed whole, after a
    header line. At a terminal long values are folded onto more lines, never cut.
    """
    if not console.is_terminal:
        for line in (columns, *rows):
            typer.echo("\t".join(value.translate(_PLAIN_ESCAPES) for value in line))
        return
    table = Table(*columns)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*row)
    console.print(table)


def mask_url(url: str) -> str:
    """The URL with its password hidden (the whole URL hidden when it cannot be parsed)."""
    # start-up: SQLAlchemy loads when a command runs.
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return MASK
