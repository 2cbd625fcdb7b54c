"""The ``enrich`` command line (Typer): serve, migrate, clients, keys, import, demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.audit.log import cli_actor, current_actor
from app.cli.common import console, err, run_in_session
from app.cli.ops import print_listing
from app.cli.ops import register as register_ops_commands
from app.cli.qa import postman
from app.core.errors import AppError
from app.core.settings import Settings, get_settings

T = TypeVar("T")

app = typer.Typer(
    help="enrich: real-time profile enrichment for Sitecore Personalize.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
clients_app = typer.Typer(help="Manage OAuth clients.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.command()(postman)


def _print_version(value: bool) -> None:
    if value:
        print(f"enrich {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """enrich: real-time profile enrichment for Sitecore Personalize."""
    del version  # --version is eager: its callback printed it and exited
    current_actor.set(cli_actor())  # changes made from the command line are audited as its user


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [ENRICH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ENRICH_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ENRICH_WORKERS]")] = None,
) -> None:
    """Run the API with uvicorn (uvloop and httptools); SIGTERM drains it gracefully."""
    from app.cli.serve import serve as run_server

    settings = get_settings()
    run_server(settings, host or settings.host, port or settings.port, workers or settings.workers)


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply database migrations (Alembic)."""
    from app.core.migrate import upgrade

    settings = get_settings()
    upgrade(settings, revision)
    console.print(f"database at {revision}: {_safe_url(settings)}")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def _print_secret(client_id: str, secret: str, scopes: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"client_id": client_id, "client_secret": secret, "scopes": scopes}))
        return
    console.print(f"client_id:     {client_id}")
    console.print(f"client_secret: {secret}")
    console.print(f"scopes:        {' '.join(scopes)}")
    console.print("[yellow]The secret is shown once; store it now.[/yellow]")


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option(help="A name for people")],
    scopes: Annotated[str, typer.Option(help='Space-separated, e.g. "profiles:read"')],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a client; prints its client_id and secret once."""
    from app.auth.service import ClientService

    async def work(session: AsyncSession, _settings: Settings) -> tuple[str, str, list[str]]:
        client, secret = await ClientService(session).create(name, scopes)
        return client.client_id, secret, sorted(client.scope_set)

    _print_secret(*run_in_session(work), as_json=as_json)


@clients_app.command("list")
def clients_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List clients (never their secrets)."""
    from app.auth.service import ClientService

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
            for c in await ClientService(session).list()
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


@clients_app.command("rotate")
def clients_rotate(
    client_id: str, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Give a client a new secret (printed once); the old secret stops working."""
    from app.auth.service import ClientService

    async def work(session: AsyncSession, _settings: Settings) -> tuple[str, str, list[str]]:
        client, secret = await ClientService(session).rotate(client_id)
        return client.client_id, secret, sorted(client.scope_set)

    _print_secret(*run_in_session(work), as_json=as_json)


@clients_app.command("disable")
def clients_disable(client_id: str) -> None:
    """Disable a client: its secret and, within a second, its tokens are refused."""
    from app.auth.service import ClientService

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await ClientService(session).disable(client_id)

    run_in_session(work)
    console.print(f"client {client_id} disabled")


@clients_app.command("delete")
def clients_delete(
    client_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False
) -> None:
    """Delete a client: disabled first (its tokens are refused within a second), then removed."""
    from app.auth.service import ClientService

    async def disable(session: AsyncSession, _settings: Settings) -> None:
        await ClientService(session).disable(client_id)

    async def delete(session: AsyncSession, _settings: Settings) -> None:
        await ClientService(session).delete(client_id)

    # Two transactions: the disable is committed (and works) even if the delete then fails.
    run_in_session(disable)
    run_in_session(delete)
    if as_json:
        typer.echo(json.dumps({"client_id": client_id, "deleted": True}))
        return
    console.print(
        f"client {client_id} deleted (its revocations are kept until its tokens expire)",
        soft_wrap=True,
        highlight=False,
    )


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key active; tokens signed by the old key stay valid until they expire."""
    from app.auth.service import KeyService

    async def work(session: AsyncSession, settings: Settings) -> str:
        return await KeyService(session).rotate(
            settings.signing_algorithm, settings.token_ttl_seconds
        )

    kid = run_in_session(work)
    console.print(f"new signing key {kid} is active (workers pick it up within seconds)")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A .csv, .ndjson or .jsonl file")],
    source: Annotated[
        str | None, typer.Option(help="Source label for records that carry none")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=100, max=50_000, help="Records per transaction")
    ] = 10_000,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or ndjson (default: by extension)")
    ] = None,
) -> None:
    """Bulk-load profiles from CSV or NDJSON; bad lines are reported, the rest still load."""
    import asyncpg
    from sqlalchemy.exc import SQLAlchemyError

    from app.cli.importing import print_report, run_import
    from app.platform.logging import exception_fields

    try:
        report = run_import(
            path,
            get_settings(),
            file_format=file_format,
            source=source,
            batch_size=batch_size,
            console=err,
        )
    except AppError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # By type and SQLSTATE: a database error's text may hold a record's values.
        fields = exception_fields(exc)
        said = " ".join(str(fields[name]) for name in ("error", "sqlstate") if name in fields)
        if isinstance(exc, OSError):
            said += f": {exc}"  # refused, unreachable: no values
        err.print(f"[red]error:[/red] database: {said}", highlight=False)
        raise typer.Exit(1) from exc
    print_report(report, console, err)
    if report.rows and not report.loaded:
        raise typer.Exit(1)  # nothing could be loaded: most likely the wrong file


DEMO_CLIENT_NAME = "demo"
DEMO_SCOPES = "profiles:read profiles:write events:write admin"


@app.command()
def demo(
    profiles: Annotated[int, typer.Option(help="How many demo profiles to generate")] = 1000,
    credentials_file: Annotated[
        str, typer.Option(help="Where the demo client's credentials are kept between runs")
    ] = "var/demo-client.json",
) -> None:
    """Load a realistic demo data set and print a demo client with a ready-to-paste curl."""
    from app.ingest.demo import ensure_demo_client, load_demo

    settings = get_settings()
    file = Path(credentials_file)
    saved = json.loads(file.read_text()) if file.exists() else None

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        loaded = await load_demo(session, settings, profiles)
        client = await ensure_demo_client(session, saved, DEMO_CLIENT_NAME, DEMO_SCOPES)
        return {"loaded": loaded, **client}

    result = run_in_session(work, settings)
    if saved is None or saved.get("client_secret") != result["client_secret"]:
        # The file holds a plain secret: owner-only, and only for the development demo.
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {"client_id": result["client_id"], "client_secret": result["client_secret"]}, handle
            )
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"demo data: {result['loaded']} profiles (test guest: demo@example.com)")
    console.print(f"demo client_id:     {result['client_id']}")
    console.print(f"demo client_secret: {result['client_secret']}  (kept in {credentials_file})")
    console.print("try it:", style="bold")
    typer.echo(
        f"curl -s -u '{result['client_id']}:{result['client_secret']}' "
        f"-d grant_type=client_credentials {base}/oauth/token"
    )
    typer.echo(
        f"TOKEN=$(curl -s -u '{result['client_id']}:{result['client_secret']}' "
        f"-d grant_type=client_credentials {base}/oauth/token | python3 -c "
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f"curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f'-d \'{{"identifiers": {{"email": "demo@example.com"}}}}\' {base}/v1/enrich'
    )


register_ops_commands(app, clients_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
