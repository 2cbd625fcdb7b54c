"""``enrich import`` and ``enrich demo``: load profiles from a file, or a demo data set with a
client to try it with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, err, load_settings, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.settings import Settings

DEMO_CLIENT_NAME = "demo"
DEMO_VIEW_NAME = "web_offer"  # (app.ingest.demo.DEMO_VIEW, named here without loading it)
DEMO_SCOPES = "profiles:read profiles:write events:write admin"


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
    # start-up: the importer and the database drivers load when the command runs.
    import asyncpg
    from sqlalchemy.exc import SQLAlchemyError

    from app.cli.importing import print_report, run_import
    from app.core.errors import AppError
    from app.platform.logging import exception_fields

    try:
        report = run_import(
            path,
            load_settings(),
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


def demo(
    profiles: Annotated[int, typer.Option(help="How many demo profiles to generate")] = 1000,
    credentials_file: Annotated[
        str, typer.Option(help="Where the demo client's credentials are kept between runs")
    ] = "var/demo-client.json",
) -> None:
    """Load a realistic demo data set and print a demo client with a ready-to-paste curl."""
    # start-up: the demo data and the services load when the command runs.
    from app.enrich.views.service import ViewService
    from app.ingest.demo import (
        DEMO_CONSENT_VIEW,
        DEMO_CONSENT_VIEW_DEFINITION,
        DEMO_VIEW,
        DEMO_VIEW_DEFINITION,
        ensure_demo_client,
        load_demo,
    )
    from app.profiles.consent import rules as consent_rules

    settings = load_settings()
    file = Path(credentials_file)
    saved = json.loads(file.read_text()) if file.exists() else None

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        loaded = await load_demo(session, settings, profiles)
        client = await ensure_demo_client(session, saved, DEMO_CLIENT_NAME, DEMO_SCOPES)
        view = await ViewService(session).ensure(DEMO_VIEW, DEMO_VIEW_DEFINITION)
        if "marketing" in consent_rules():  # (a deployment with other purposes skips it)
            await ViewService(session).ensure(DEMO_CONSENT_VIEW, DEMO_CONSENT_VIEW_DEFINITION)
        return {"loaded": loaded, **client, "view": f"{view.name}@{view.version}"}

    result = run_in_session(work, settings)
    if saved is None or saved.get("client_secret") != result["client_secret"]:
        save_credentials(file, result["client_id"], result["client_secret"])
    print_try_it(f"http://{settings.host}:{settings.port}", result, credentials_file)


def save_credentials(file: Path, client_id: str, client_secret: str) -> None:
    """Keep the demo client's credentials for the next run (owner-only: a plain secret)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"client_id": client_id, "client_secret": client_secret}, handle)


def print_try_it(base: str, result: dict[str, Any], credentials_file: str) -> None:
    """What was loaded, the demo client, and the two curl commands that try it."""
    console.print(
        f"demo data: {result['loaded']} profiles (test guest: demo@example.com; "
        "optout@example.com denied marketing: try it with the view email_offer)",
        soft_wrap=True,
    )
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
    console.print(
        f'the example view {result["view"]}: add "view": "{DEMO_VIEW_NAME}" to the body '
        "for a flat answer with defaults (enrich views show web_offer)",
        soft_wrap=True,
        highlight=False,
    )
