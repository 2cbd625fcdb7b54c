"""``enrich personalize``: a ready Sitecore Personalize connection to this service
(``connection``), and a stand-in that calls the service the way that connection will
(``test``): the "Test" button before going to Personalize, and what to run when a connection
misbehaves. docs/personalize.md is the guide."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, err, load_settings

if TYPE_CHECKING:
    from app.personalize.standin import Outcome

app = typer.Typer(
    help="Connect Sitecore Personalize: definitions and a test.", no_args_is_help=True
)


FieldsOption = Annotated[
    str | None,
    typer.Option(help="Field paths (traits.tier,segments), or summary (the default) or everything"),
]
ViewOption = Annotated[
    str | None,
    typer.Option(
        help="A view (enrich views), name@version, instead of --fields: the request names it "
        "and the outputs read its flat keys (a name alone pins its latest version)"
    ),
]


@app.command("connection")
def connection(
    client_id: Annotated[str, typer.Option(help="The client Personalize uses (enr_...)")],
    fields: FieldsOption = None,
    view: ViewOption = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="The service's public https URL (default: ENRICH_PUBLIC_URL)"),
    ] = None,
    identifiers: Annotated[
        str, typer.Option(help="Identifier inputs, in the order tried")
    ] = "guest_ref,email",
    auth_option: Annotated[
        str,
        typer.Option(
            help="HEADER (Basic), BODY (form), CERTIFICATE (mutual TLS, no secret), "
            "or API_KEY (a header; weaker)"
        ),
    ] = "HEADER",
    mutual_tls: Annotated[
        bool, typer.Option("--mutual-tls", help="Personalize presents a client certificate")
    ] = False,
    method: Annotated[str, typer.Option(help="POST or GET")] = "POST",
    name: Annotated[
        str, typer.Option(help="The connection's name (no hyphens)")
    ] = "enrich_profile",
    output_format: Annotated[
        str, typer.Option("--format", help="json (the connections REST API) or checklist (the UI)")
    ] = "json",
) -> None:
    """Print a Personalize connection to this service. The client secret is never printed:
    the definition holds a placeholder to replace."""
    # start-up: the field parser and the definitions load when the command runs.
    from app.core.errors import AppError
    from app.enrich.fields import parse_fields
    from app.personalize.definition import DefinitionError
    from app.personalize.definition import connection as build

    try:
        paths, pinned = _asked(fields, view)
        parse_fields(paths)
        settings = load_settings()
        base = base_url or settings.public_url
        definition = build(
            base_url=base,
            client_id=client_id,
            fields=paths,
            view=pinned,
            identifiers=[i.strip().lower() for i in identifiers.split(",") if i.strip()],
            auth_option=auth_option.upper(),
            method=method.upper(),
            name=name,
            mutual_tls=mutual_tls,
            api_key_header=settings.api_key_header,
        )
    except (AppError, DefinitionError) as exc:
        err.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(2) from exc
    _emit(definition, base, output_format)


def _asked(
    fields: str | None, view: str | None
) -> tuple[list[str], tuple[str, dict[str, str]] | None]:
    """The fields the connection asks for, and the view it names (``--view``) if any."""
    # start-up: the definitions load when the command runs.
    from app.personalize.definition import field_paths

    if view is not None and fields is not None:
        err.print("[red]error:[/red] give --view or --fields, not both")
        raise typer.Exit(2)
    if view is None:
        return field_paths(fields or "summary"), None
    name, rename, paths = _pinned_view(view)
    return paths, (name, rename)


def _pinned_view(text: str) -> tuple[str, dict[str, str], list[str]]:
    """The view as stored: ``name@version`` (the latest live one for a name alone), its
    renames and its fields; a retired or unknown one ends the command (exit 1)."""
    # start-up: the views and the database load when the command runs.
    from app.cli.common import run_in_session
    from app.core.errors import AppError
    from app.enrich.views.service import ViewService

    async def work(session: Any, _settings: Any) -> tuple[str, dict[str, str], list[str]]:
        row = await ViewService(session).find(text)
        if row.retired_at is not None:
            raise AppError(f"view {row.name}@{row.version} is retired")
        definition = row.definition
        return f"{row.name}@{row.version}", dict(definition["rename"]), list(definition["fields"])

    pinned = run_in_session(work)
    if "@" not in text:
        err.print(f"[yellow]note:[/yellow] the connection is pinned to {pinned[0]}")
    return pinned


def _emit(definition: dict[str, Any], base: str, output_format: str) -> None:
    """Print the definition (JSON or the checklist), and what the person must still do."""
    # start-up: loads when the command runs.
    from app.personalize.checklist import checklist

    if output_format not in ("json", "checklist"):
        err.print("[red]error:[/red] --format is json or checklist")
        raise typer.Exit(2)
    if not base.startswith("https://"):
        err.print(
            "[yellow]note:[/yellow] Personalize accepts only an https:// access token URL; "
            "set --base-url or ENRICH_PUBLIC_URL to the service's https address."
        )
    if output_format == "checklist":
        typer.echo(checklist(definition), nl=False)
    else:
        typer.echo(json.dumps(definition, indent=2))
    if definition["auth"].get("clientSecret"):
        err.print(
            "[yellow]The client secret is not in it:[/yellow] replace the clientSecret "
            "placeholder (the secret `enrich clients create` or `rotate` printed once)."
        )


@app.command("test")
def run_test(
    definition_file: Annotated[Path, typer.Argument(help="A connection definition (JSON)")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="A request input: name=value (repeat)")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(envvar="ENRICH_CLIENT_SECRET", help="The client secret (never printed)"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ENRICH_API_KEY", help="The API key (never printed), for API_KEY"),
    ] = None,
    cert: Annotated[
        Path | None, typer.Option(help="Mutual TLS: the client certificate (PEM) to present")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="Mutual TLS: its private key (PEM)")] = None,
    ca_certs: Annotated[
        Path | None, typer.Option(help="Check the service's certificate against this CA file")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON")] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify the service's TLS certificate")
    ] = False,
) -> None:
    """Call the service as the connection would (token, request, output mapping) and report
    status, times and each mapped output. Exit code 1 when Personalize would have failed."""
    # start-up: the stand-in (and httpx) load when the command runs.
    from app.personalize.definition import DefinitionError
    from app.personalize.standin import run

    values: dict[str, str] = {}
    for item in inputs or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            err.print(f"[red]error:[/red] --input takes name=value, got {item[:40]!r}")
            raise typer.Exit(2)
        values[name.strip()] = value
    if (cert is None) != (key is None):
        err.print("[red]error:[/red] --cert and --key go together")
        raise typer.Exit(2)
    verify: bool | str = str(ca_certs) if ca_certs is not None else not insecure
    client_cert = (str(cert), str(key)) if cert is not None and key is not None else None
    try:
        definition = json.loads(definition_file.read_text())
        outcome = asyncio.run(
            run(definition, values, secret=secret, api_key=api_key, verify=verify, cert=client_cert)
        )
    except (OSError, ValueError) as exc:  # (DefinitionError is a ValueError)
        reason = exc if isinstance(exc, DefinitionError) else f"cannot read it: {exc}"
        err.print(f"[red]error:[/red] {definition_file}: {reason}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(outcome.as_json(), indent=2, default=str))
    else:
        _report(outcome)
    if not outcome.ok:
        raise typer.Exit(1)


def _report(outcome: Outcome) -> None:
    """The outcome for a person: what Personalize would have seen."""
    lines: list[str] = []
    if outcome.token_status is not None:
        lines.append(f"token        {outcome.token_status} in {outcome.token_ms:.0f} ms")
    if outcome.stage != "token":
        status = outcome.status if outcome.status is not None else "-"
        lines.append(f"request      {status} in {outcome.request_ms:.0f} ms")
        lines.append(
            f"correlation  {outcome.correlation_id} (echoed: {outcome.echoed_correlation_id})"
        )
        lines.append(f"request id   {outcome.request_id}")
        lines.append(f"answer       {outcome.answer_chars} characters")
    for label, value in outcome.outputs.items():
        lines.append(f"output       {label} = {_short(value)}")
    for label in outcome.missing:
        lines.append(f"output       {label}: not in the answer")
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if outcome.ok:
        console.print("[green]OK[/green]: Personalize would get these outputs.")
    else:
        err.print(f"[red]FAILED[/red] ({outcome.stage}): {outcome.error}", markup=True)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
