"""``enrich clients``: create, list, rotate, disable and delete OAuth clients, and set a client's
rate limit and the addresses it may call from."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, err, print_listing, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.service import ClientService
    from app.core.settings import Settings

app = typer.Typer(help="Manage OAuth clients.", no_args_is_help=True)


def clients(session: AsyncSession) -> ClientService:
    """The client administration, in the command's transaction."""
    # start-up: the auth service loads when a command runs, not when ``enrich`` starts.
    from app.auth.service import ClientService

    return ClientService(session)


def _print_secret(client_id: str, secret: str, scopes: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"client_id": client_id, "client_secret": secret, "scopes": scopes}))
        return
    console.print(f"client_id:     {client_id}")
    console.print(f"client_secret: {secret}")
    console.print(f"scopes:        {' '.join(scopes)}")
    console.print("[yellow]The secret is shown once; store it now.[/yellow]")


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="A name for people")],
    scopes: Annotated[str, typer.Option(help='Space-separated, e.g. "profiles:read"')],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a client; prints its client_id and secret once."""

    async def work(session: AsyncSession, _settings: Settings) -> tuple[str, str, list[str]]:
        client, secret = await clients(session).create(name, scopes)
        return client.client_id, secret, sorted(client.scope_set)

    _print_secret(*run_in_session(work), as_json=as_json)


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List clients (never their secrets)."""

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [
            {
                "client_id": c.client_id,
                "name": c.name,
                "scopes": sorted(c.scope_set),
                "disabled": c.disabled,
                "created_at": c.created_at.isoformat(),
                "rotated_at": c.rotated_at.isoformat() if c.rotated_at else None,
            }
            for c in await clients(session).list()
        ]

    rows = run_in_session(work)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    print_listing(
        console,
        ("client_id", "name", "scopes", "disabled", "created_at", "rotated_at"),
        (
            (
                row["client_id"],
                row["name"],
                " ".join(row["scopes"]),
                str(row["disabled"]),
                row["created_at"],
                row["rotated_at"] or "",
            )
            for row in rows
        ),
    )


@app.command("rotate")
def rotate(client_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Give a client a new secret (printed once); the old secret stops working."""

    async def work(session: AsyncSession, _settings: Settings) -> tuple[str, str, list[str]]:
        client, secret = await clients(session).rotate(client_id)
        return client.client_id, secret, sorted(client.scope_set)

    _print_secret(*run_in_session(work), as_json=as_json)


@app.command("disable")
def disable(client_id: str) -> None:
    """Disable a client: its secret and, within a second, its tokens are refused."""

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await clients(session).disable(client_id)

    run_in_session(work)
    console.print(f"client {client_id} disabled")


@app.command("delete")
def delete(
    client_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False
) -> None:
    """Delete a client: disabled first (its tokens are refused within a second), then removed."""

    async def first_disable(session: AsyncSession, _settings: Settings) -> None:
        await clients(session).disable(client_id)

    async def then_delete(session: AsyncSession, _settings: Settings) -> None:
        await clients(session).delete(client_id)

    # Two transactions: the disable is committed (and works) even if the delete then fails.
    run_in_session(first_disable)
    run_in_session(then_delete)
    if as_json:
        typer.echo(json.dumps({"client_id": client_id, "deleted": True}))
        return
    console.print(
        f"client {client_id} deleted (its revocations are kept until its tokens expire)",
        soft_wrap=True,
        highlight=False,
    )


@app.command("limit")
def limit(
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
    if (rps is None) == (not default):
        err.print("[red]error:[/red] give --rps (and --burst), or --default")
        raise typer.Exit(2)

    async def work(session: AsyncSession, settings: Settings) -> str:
        client = await clients(session).limit(client_id, rps, burst)
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


@app.command("allow")
def allow(
    client_id: str,
    networks: Annotated[
        list[str] | None,
        typer.Argument(help="Address ranges (CIDR) or addresses, e.g. 203.0.113.0/24"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Allow every address again")] = False,
) -> None:
    """Let a client call only from these addresses (replaces its list); others get 403."""
    if bool(networks) == clear:
        err.print("[red]error:[/red] give address ranges, or --clear")
        raise typer.Exit(2)

    async def work(session: AsyncSession, _settings: Settings) -> str | None:
        client = await clients(session).allow(client_id, list(networks or []))
        return client.allowed_networks

    allowed = run_in_session(work)
    shown = allowed or "anywhere"
    console.print(f"client {client_id} may call from: {shown}", soft_wrap=True, highlight=False)
