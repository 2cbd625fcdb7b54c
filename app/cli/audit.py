"""``enrich audit``: the audit log (who changed which client or key, who erased a profile)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, print_listing, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when the command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.settings import Settings

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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


def audit(
    since: Annotated[
        str | None, typer.Option(help="Only entries since: 30m, 24h, 7d, or an ISO date/time")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (the newest)")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List the audit log: client and key changes, profile erasures (who, what, when)."""
    # start-up: the audit log's model and SQLAlchemy load when the command runs.
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
