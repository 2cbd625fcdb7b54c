"""Operations commands: ``clients limit``, ``clients allow`` and ``audit``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.common import console, err, run_in_session
from app.core.settings import Settings

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# Control characters that would split a plain line or column, written as escapes instead.
_PLAIN_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d`` (ago), or an ISO date or time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(text.lower())
    if relative:
        return now - timedelta(**{_UNITS[relative[2]]: float(relative[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter("use e.g. 30m, 24h, 7d, 2026-11-28 or 2026-11-28T16:45") from exc
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def clients_limit(
    client_id: str,
    rps: Annotated[
        float | None, typer.Option(min=0, help="Requests per second (0: no limit)")
    ] = None,
    burst: Annotated[
        int | None, typer.Option(min=1, help="Requests at once above the rate (default: rps)")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Back to ENRICH_RATE_LIMIT_RPS/_BURST")
    ] = False,
) -> None:
    """Set a client's rate limit; every worker applies it within a second."""
    from app.auth.service import ClientService

    if (rps is None) == (not default):
        err.print("[red]error:[/red] give --rps (and --burst), or --default")
        raise typer.Exit(2)

    async def work(session: AsyncSession, settings: Settings) -> str:
        client = await ClientService(session).limit(client_id, rps, burst)
        if client.rate_limit_rps is None:
            return (
                f"the default: {settings.rate_limit_rps:g} requests/s, "
                f"burst {settings.rate_limit_burst}"
            )
        if client.rate_limit_rps == 0:
            return "no limit"
        shown = client.rate_limit_burst or max(1, math.ceil(client.rate_limit_rps))
        return f"{client.rate_limit_rps:g} requests/s, burst {shown}"

    console.print(f"client {client_id}: {run_in_session(work)}", soft_wrap=True, highlight=False)


def clients_allow(
    client_id: str,
    networks: Annotated[
        list[str] | None,
        typer.Argument(help="Address ranges (CIDR) or addresses, e.g. 203.0.113.0/24"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Allow every address again")] = False,
) -> None:
    """Let a client call only from these addresses (replaces its list); others get 403."""
    from app.auth.service import ClientService

    if bool(networks) == clear:
        err.print("[red]error:[/red] give address ranges, or --clear")
        raise typer.Exit(2)

    async def work(session: AsyncSession, _settings: Settings) -> str | None:
        client = await ClientService(session).allow(client_id, list(networks or []))
        return client.allowed_networks

    allowed = run_in_session(work)
    shown = allowed or "anywhere"
    console.print(f"client {client_id} may call from: {shown}", soft_wrap=True, highlight=False)


def audit(
    since: Annotated[
        str | None, typer.Option(help="Only entries since: 30m, 24h, 7d, or an ISO date/time")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (the newest)")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List the audit log: client and key changes, profile erasures (who, what, when)."""
    from app.audit.log import AuditLog

    start = parse_since(since) if since else None

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [
            {
                # SQLite hands times back naive (they are UTC)
                "at": (event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC))
                .astimezone(UTC)
                .isoformat(),
                "actor": event.actor,
                "action": event.action,
                "target": event.target,
                "details": event.details,
            }
            for event in await AuditLog(session).list(start, limit)
        ]

    rows = run_in_session(work)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    print_listing(
        console,
        ("at", "actor", "action", "target", "details"),
        (
            (
                str(row["at"]),
                row["actor"],
                row["action"],
                row["target"] or "",
                " ".join(f"{k}={v}" for k, v in row["details"].items()),
            )
            for row in rows
        ),
    )


def register(app: typer.Typer, clients_app: typer.Typer) -> None:
    """Add the commands to ``enrich``."""
    clients_app.command("limit")(clients_limit)
    clients_app.command("allow")(clients_allow)
    app.command("audit")(audit)
