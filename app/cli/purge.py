"""``enrich purge``: delete old events in batches, without stopping traffic."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from app.cli.audit import parse_since
from app.cli.common import console, load_settings


def purge(
    events_older: Annotated[
        str,
        typer.Option(
            "--events-older",
            help="Delete events received longer ago than this: 30d, 12h, 90m, or before an "
            "ISO date/time",
        ),
    ],
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Events per transaction")] = 1000,
    pause: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds between batches, left to traffic")
    ] = 0.05,
) -> None:
    """Delete old events; profiles keep the metrics the events made (docs/operations.md)."""
    # start-up: SQLAlchemy and the models load when the command runs.
    from app.core.db import create_engine, create_sessionmaker
    from app.events.retention import purge_events

    before = parse_since(events_older)
    settings = load_settings()

    async def run() -> int:
        engine = create_engine(settings)
        try:
            return await purge_events(create_sessionmaker(engine), before, batch=batch, pause=pause)
        finally:
            await engine.dispose()

    deleted = asyncio.run(run())
    console.print(f"deleted {deleted:,} events received before {before.isoformat()}")
