"""``enrich views``: create a view (or its next version), list, show and retire views; and
``enrich clients view``: a client's default view. Every change is audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, print_listing, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.models import ViewVersion
    from app.core.settings import Settings
    from app.enrich.views.service import ViewService

app = typer.Typer(
    help="Manage views: named, versioned answer shapes for /v1/enrich (view=name[@version]).",
    no_args_is_help=True,
)


def views(session: AsyncSession) -> ViewService:
    """The view administration, in the command's transaction."""
    # start-up: the enrich views load when a command runs, not when ``enrich`` starts.
    from app.enrich.views.service import ViewService

    return ViewService(session)


def _pairs(items: list[str] | None, option: str, as_json: bool) -> dict[str, Any]:
    """``FIELD=VALUE`` options as a dict (values as JSON when ``as_json`` and they parse)."""
    pairs: dict[str, Any] = {}
    for item in items or ():
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise typer.BadParameter(f"{option} takes FIELD=VALUE, not {item!r}")
        if as_json:
            try:
                pairs[field.strip()] = json.loads(value)
            except ValueError:
                pairs[field.strip()] = value
        else:
            pairs[field.strip()] = value.strip()
    return pairs


def _row(view: ViewVersion) -> dict[str, Any]:
    return {
        "name": view.name,
        "version": view.version,
        "view": f"{view.name}@{view.version}",
        "state": "retired" if view.retired_at else "live",
        "created_at": view.created_at.isoformat(),
        "retired_at": view.retired_at.isoformat() if view.retired_at else None,
        **view.definition,
    }


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The view's name (a new name: version 1)")],
    fields: Annotated[
        str | None,
        typer.Option(help="Comma-separated field paths, as `fields` takes them"),
    ] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option(help="FIELD=KEY: answer FIELD as the flat top-level KEY (repeat)"),
    ] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(help="FIELD=VALUE: VALUE (JSON, else text) when the guest lacks FIELD"),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--file", help='A JSON definition: {"fields", "rename", "defaults", "purpose"}'
        ),
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help="The consent purpose its answers serve (ENRICH_CONSENT_PURPOSES)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a view, or the next version of one; earlier versions keep their shape."""
    if from_file is not None:
        if fields or rename or default or purpose:
            raise typer.BadParameter(
                "give --file, or --fields with --rename, --default and --purpose"
            )
        definition = json.loads(from_file.read_text())
    else:
        if not fields:
            raise typer.BadParameter("give --fields (or --file)")
        definition = {
            "fields": [item.strip() for item in fields.split(",") if item.strip()],
            "rename": _pairs(rename, "--rename", as_json=False),
            "defaults": _pairs(default, "--default", as_json=True),
        }
        if purpose is not None:
            definition["purpose"] = purpose.strip().lower()

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        return _row(await views(session).create(name, definition))

    made = run_in_session(work)
    if as_json:
        typer.echo(json.dumps(made))
        return
    console.print(
        f"view {made['view']} created; ask for it with view={made['name']} (its latest "
        f"version) or view={made['view']} (this one for good)",
        soft_wrap=True,
        highlight=False,
    )


@app.command("list")
def list_(
    include_retired: Annotated[bool, typer.Option("--all", help="Retired versions too")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the views' versions (live ones unless --all)."""

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [_row(view) for view in await views(session).listed(include_retired)]

    rows = run_in_session(work)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    print_listing(
        console,
        ("view", "state", "fields", "rename", "created_at"),
        (
            (
                row["view"],
                row["state"],
                ",".join(row["fields"]),
                " ".join(f"{f}={k}" for f, k in row["rename"].items()),
                row["created_at"],
            )
            for row in rows
        ),
    )


@app.command("show")
def show(
    view: Annotated[str, typer.Argument(help="name (its latest live version) or name@version")],
) -> None:
    """Print one version of a view as JSON (its definition, state and times)."""

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        return _row(await views(session).find(view))

    typer.echo(json.dumps(run_in_session(work), indent=2))


@app.command("retire")
def retire(
    view: Annotated[str, typer.Argument(help="name@version, or name: every live version")],
) -> None:
    """Retire a view version (or all of a name's); every worker refuses it within a second."""

    async def work(session: AsyncSession, _settings: Settings) -> list[int]:
        return await views(session).retire(view)

    retired = run_in_session(work)
    name = view.strip().partition("@")[0].lower()
    if not retired:
        console.print(f"nothing to retire: {view} is retired already", highlight=False)
        return
    shown = ", ".join(f"{name}@{version}" for version in retired)
    console.print(f"retired {shown}", soft_wrap=True, highlight=False)


def client_view(
    client_id: str,
    view: Annotated[
        str | None,
        typer.Argument(help="name (always its latest live version) or name@version (pinned)"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="No default view")] = False,
) -> None:
    """Give a client a default view: what its enrich requests get when they name neither
    view nor fields (every worker within a second); without VIEW, print the current one."""
    if view is not None and clear:
        raise typer.BadParameter("give VIEW or --clear, not both")

    async def work(session: AsyncSession, _settings: Settings) -> str | None:
        service = views(session)
        if view is None and not clear:
            return (await service.clients.get(client_id)).default_view
        return (await service.assign(client_id, view)).default_view

    current = run_in_session(work)
    shown = current or "none (the whole answer, or the request's fields)"
    console.print(f"client {client_id}: default view {shown}", soft_wrap=True, highlight=False)


def client_purpose(
    client_id: str,
    purpose: Annotated[
        str | None,
        typer.Argument(help="A configured consent purpose (ENRICH_CONSENT_PURPOSES)"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="No default purpose")] = False,
) -> None:
    """Give a client a default consent purpose: its enrich answers hold no personal data for a
    guest who has not consented to it, unless the view declares its own purpose (every worker
    within a second); without PURPOSE, print the current one."""
    if purpose is not None and clear:
        raise typer.BadParameter("give PURPOSE or --clear, not both")

    async def work(session: AsyncSession, _settings: Settings) -> str | None:
        service = views(session)
        if purpose is None and not clear:
            return (await service.clients.get(client_id)).default_purpose
        return (await service.assign_purpose(client_id, purpose)).default_purpose

    current = run_in_session(work)
    shown = current or "none (no consent check unless the view declares a purpose)"
    console.print(f"client {client_id}: default purpose {shown}", soft_wrap=True, highlight=False)
