"""``enrich clients``: create, list, rotate, disable and delete OAuth clients, set a client's
rate limit and the addresses it may call from, and manage its API keys (``api-key``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import console, err, print_listing, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.apikey_admin import ApiKeyService
    from app.auth.clients import ClientService
    from app.core.models import ApiKey, Client
    from app.core.settings import Settings

app = typer.Typer(help="Manage OAuth clients.", no_args_is_help=True)

CertificateSubject = Annotated[
    str | None,
    typer.Option(
        help="Authenticate with a certificate from ENRICH_CLIENT_CA_CERTS with this subject "
        "(RFC 4514, e.g. 'CN=personalize,O=Example'; tls_client_auth), no secret",
    ),
]
Certificates = Annotated[
    list[Path] | None,
    typer.Option(
        help="Authenticate with this self-signed certificate (PEM; repeat for several; "
        "self_signed_tls_client_auth), no secret",
    ),
]


def _certificate_options(
    subject: str | None, paths: list[Path] | None, *, required: bool
) -> tuple[str | None, list[str]]:
    """The subject, normalized, or the certificates' thumbprints; exit 2 on a bad one."""
    # start-up: cryptography loads when the command runs.
    from app.auth.certauth import certificate_thumbprint, subject_dn
    from app.core.errors import AppError

    if subject is not None and paths:
        raise typer.BadParameter("give --certificate-subject or --certificate, not both")
    if required and subject is None and not paths:
        raise typer.BadParameter("give --certificate-subject or --certificate")
    try:
        if subject is not None:
            return subject_dn(subject), []
        return None, [certificate_thumbprint(path.read_bytes()) for path in paths or ()]
    except (AppError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def clients(session: AsyncSession) -> ClientService:
    """The client administration, in the command's transaction."""
    # start-up: the auth service loads when a command runs, not when ``enrich`` starts.
    from app.auth.clients import ClientService

    return ClientService(session)


def _print_secret(
    client_id: str, secret: str, scopes: list[str], as_json: bool, method: str = "client_secret"
) -> None:
    if as_json:
        # (null: a client without a secret, for API keys or its certificate only)
        shown = secret or None
        typer.echo(
            json.dumps(
                {"client_id": client_id, "client_secret": shown, "scopes": scopes}
                | ({"auth_method": method} if method != "client_secret" else {})
            )
        )
        return
    console.print(f"client_id:     {client_id}")
    if not secret:
        console.print(f"scopes:        {' '.join(scopes)}")
        if method != "client_secret":
            console.print(f"No secret: it authenticates with its certificate ({method}).")
        else:
            console.print("No secret: give it API keys with `enrich clients api-key create`.")
        return
    console.print(f"client_secret: {secret}")
    console.print(f"scopes:        {' '.join(scopes)}")
    console.print("[yellow]The secret is shown once; store it now.[/yellow]")


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="A name for people")],
    scopes: Annotated[str, typer.Option(help='Space-separated, e.g. "profiles:read"')],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    no_secret: Annotated[
        bool, typer.Option("--no-secret", help="No secret: the client uses API keys only")
    ] = False,
    certificate_subject: CertificateSubject = None,
    certificate: Certificates = None,
) -> None:
    """Create a client; prints its client_id and secret once (none with a certificate)."""
    subject, thumbprints = _certificate_options(certificate_subject, certificate, required=False)

    async def work(session: AsyncSession, _settings: Settings) -> tuple[str, str, list[str], str]:
        client, secret = await clients(session).create(
            name, scopes, with_secret=not no_secret, subject=subject, thumbprints=thumbprints
        )
        return client.client_id, secret, sorted(client.scope_set), client.auth_method

    client_id, secret, granted, method = run_in_session(work)
    _print_secret(client_id, secret, granted, as_json, method)


@app.command("certify")
def certify(
    client_id: str,
    certificate_subject: CertificateSubject = None,
    certificate: Certificates = None,
) -> None:
    """Make a client authenticate with its certificate alone (RFC 8705); its secret stops
    working. Run again to change the certificate (give the old and the new while both live)."""
    subject, thumbprints = _certificate_options(certificate_subject, certificate, required=True)

    async def work(session: AsyncSession, _settings: Settings) -> str:
        return (await clients(session).certify(client_id, subject, thumbprints)).auth_method

    method = run_in_session(work)
    console.print(f"client {client_id} authenticates with its certificate ({method})")


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
                "auth_method": c.auth_method,
                "certificate_subject": c.tls_subject_dn,
                "certificate_thumbprints": (c.tls_thumbprints or "").split(),
            }
            for c in await clients(session).list()
        ]

    rows = run_in_session(work)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    print_listing(
        console,
        ("client_id", "name", "scopes", "auth", "disabled", "created_at", "rotated_at"),
        (
            (
                row["client_id"],
                row["name"],
                " ".join(row["scopes"]),
                row["auth_method"],
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


# -- API keys ---------------------------------------------------------------------------------

api_keys = typer.Typer(
    help="Manage a client's API keys (a static key in a header: the weaker option).",
    no_args_is_help=True,
)
app.add_typer(api_keys, name="api-key")


def key_admin(session: AsyncSession) -> ApiKeyService:
    # start-up: loaded when a command runs.
    from app.auth.apikey_admin import ApiKeyService

    return ApiKeyService(session)


def _print_key(shown: dict[str, Any], header: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(shown))
        return
    console.print(f"key_id:    {shown['key_id']}", highlight=False)
    console.print(f"client_id: {shown['client_id']}", highlight=False)
    console.print(f"api_key:   {shown['api_key']}", highlight=False)
    console.print(f"scopes:    {' '.join(shown['scopes'])}", highlight=False)
    console.print(f"Send it as the {header} header. The key is shown once; store it now.")


def _issued(key: ApiKey, plain: str, client: Client) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "client_id": key.client_id,
        "name": key.name,
        "api_key": plain,
        "scopes": sorted(client.scope_set),
    }


@api_keys.command("create")
def api_key_create(
    client_id: str,
    name: Annotated[str | None, typer.Option(help="A name for people (default: the client's)")] = (
        None
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Give a client a new API key (printed once); its secret and other keys still work."""

    async def work(session: AsyncSession, settings: Settings) -> tuple[dict[str, Any], str]:
        key, plain, client = await key_admin(session).create(client_id, name)
        return _issued(key, plain, client), settings.api_key_header

    _print_key(*run_in_session(work), as_json=as_json)


@api_keys.command("list")
def api_key_list(
    client_id: Annotated[str | None, typer.Argument(help="Only this client's keys")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List API keys (never the keys themselves): id, client, name, state, times."""

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        # start-up: loaded when the command runs.
        from app.auth.apikey_admin import key_state

        def when(value: Any) -> str | None:
            return value.isoformat() if value is not None else None

        return [
            {
                "key_id": k.key_id,
                "client_id": k.client_id,
                "name": k.name,
                "state": key_state(k),
                "created_at": when(k.created_at),
                "expires_at": when(k.expires_at),
                "revoked_at": when(k.revoked_at),
            }
            for k in await key_admin(session).list(client_id)
        ]

    rows = run_in_session(work)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    columns = ("key_id", "client_id", "name", "state", "created_at", "expires_at", "revoked_at")
    print_listing(console, columns, ([row[c] or "" for c in columns] for row in rows))


@api_keys.command("rotate")
def api_key_rotate(
    key_id: str,
    grace: Annotated[
        int, typer.Option(min=0, help="Seconds the old key keeps working (default: none)")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replace a key with a new one (printed once); the old one stops working (after --grace)."""

    async def work(session: AsyncSession, settings: Settings) -> tuple[dict[str, Any], str]:
        key, plain, client = await key_admin(session).rotate(key_id, grace)
        return {**_issued(key, plain, client), "replaced": key_id}, settings.api_key_header

    _print_key(*run_in_session(work), as_json=as_json)


@api_keys.command("revoke")
def api_key_revoke(
    key_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False
) -> None:
    """Revoke a key: every worker refuses it within a second."""

    async def work(session: AsyncSession, _settings: Settings) -> str:
        return (await key_admin(session).revoke(key_id)).client_id

    owner = run_in_session(work)
    if as_json:
        typer.echo(json.dumps({"key_id": key_id, "client_id": owner, "revoked": True}))
        return
    console.print(f"API key {key_id} of client {owner} revoked", soft_wrap=True, highlight=False)
