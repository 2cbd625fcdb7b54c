"""OAuth clients: their ids and secrets, and their administration (the CLI's ``enrich clients``)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import log as audit
from app.audit.log import AuditLog
from app.auth.certauth import (
    CERTIFICATE_METHODS,
    CLIENT_SECRET,
    SELF_SIGNED_TLS_CLIENT_AUTH,
    TLS_CLIENT_AUTH,
    subject_dn,
)
from app.auth.repository import ApiKeyRepository, ClientRepository
from app.auth.schemas import SCOPES
from app.core.addresses import parse_networks
from app.core.errors import AppError, NotFoundError
from app.core.models import Client
from app.core.models.base import utcnow

SECRET_SCHEME = "sha256"
# The stored "hash" of a client without a secret: no secret hashes to it.
NO_SECRET = "none"


def generate_client_id() -> str:
    return "enr_" + secrets.token_hex(12)


def generate_secret() -> str:
    """256 random bits, URL-safe: nothing to escape in Basic auth or a form.

    Never starting with "-": a secret pasted after a command-line option (`--client-secret X`)
    would otherwise be read as an option by argparse and similar parsers.
    """
    while True:
        secret = secrets.token_urlsafe(32)
        if not secret.startswith("-"):
            return secret


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits, never chosen by people, so there is no dictionary to slow
    # down: a plain SHA-256 is as strong as a password hash here and costs microseconds.
    return f"{SECRET_SCHEME}${hashlib.sha256(secret.encode()).hexdigest()}"


def verify_secret(secret: str, stored: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored.encode())


def parse_scopes(raw: str) -> list[str]:
    scopes = sorted(set(raw.split()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise AppError(
            f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}",
            code="invalid_scope",
        )
    return scopes


class ClientService:
    """Client administration (the CLI, and later an admin API)."""

    def __init__(self, session: AsyncSession, actor: str | None = None) -> None:
        self.clients = ClientRepository(session)
        self.audit = AuditLog(session, actor)

    async def create(
        self,
        name: str,
        scopes: str,
        *,
        client_id: str | None = None,
        secret: str | None = None,
        with_secret: bool = True,
        subject: str | None = None,
        thumbprints: Sequence[str] = (),
    ) -> tuple[Client, str]:
        """A new client and its secret ("" ``with_secret=False``: API keys only, until a
        rotate gives it a secret; "" too with a certificate, ``subject`` or ``thumbprints``:
        see ``certify``)."""
        scope_list = parse_scopes(scopes)
        if not scope_list:
            raise AppError("a client needs at least one scope", code="invalid_scope")
        with_secret = with_secret and subject is None and not thumbprints
        secret = (secret or generate_secret()) if with_secret else ""
        client = Client(
            client_id=client_id or generate_client_id(),
            name=name,
            secret_hash=hash_secret(secret) if with_secret else NO_SECRET,
            scopes=" ".join(scope_list),
            disabled=False,
            created_at=utcnow(),
        )
        _set_certificate(client, subject, thumbprints)
        await self.clients.add(client)
        await self.audit.record(
            audit.CLIENT_CREATED,
            client.client_id,
            name=name,
            scopes=scope_list,
            auth_method=client.auth_method,
        )
        return client, secret

    async def certify(
        self, client_id: str, subject: str | None, thumbprints: Sequence[str] = ()
    ) -> Client:
        """From now on the client authenticates with its certificate alone, and has no secret:
        one with ``subject`` from ENRICH_CLIENT_CA_CERTS (tls_client_auth), or one of the
        self-signed certificates of these ``thumbprints`` (self_signed_tls_client_auth;
        several while one replaces another). Issued tokens stay valid."""
        if (subject is None) == (not thumbprints):
            raise AppError("give a certificate subject or self-signed certificates, not both")
        client = await self.get(client_id)
        _set_certificate(client, subject, thumbprints)
        client.secret_hash = NO_SECRET
        await self.audit.record(
            audit.CLIENT_CERTIFIED,
            client_id,
            auth_method=client.auth_method,
            subject=client.tls_subject_dn,
            thumbprints=list(thumbprints),
        )
        return client

    async def get(self, client_id: str) -> Client:
        client = await self.clients.get(client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id}")
        return client

    async def rotate(self, client_id: str) -> tuple[Client, str]:
        """Give the client a new secret; the old one stops working, issued tokens stay valid."""
        client = await self.get(client_id)
        if client.auth_method in CERTIFICATE_METHODS:
            raise AppError(
                f"client {client_id} authenticates with its certificate and has no secret "
                "(`enrich clients certify` changes which certificate)"
            )
        secret = generate_secret()
        client.secret_hash = hash_secret(secret)
        client.rotated_at = utcnow()
        await self.audit.record(audit.CLIENT_ROTATED, client_id)
        return client, secret

    async def disable(self, client_id: str) -> Client:
        """Refuse the client's credentials and, within a second, all its issued tokens."""
        client = await self.get(client_id)
        if not client.disabled:
            client.disabled = True
            client.disabled_at = utcnow()
            await self.audit.record(audit.CLIENT_DISABLED, client_id)
        return client

    async def delete(self, client_id: str) -> None:
        """Delete a disabled client; its revocations stay until its tokens expire.

        Only a disabled client: disabling, committed first, is what refuses its tokens on
        every worker within a second; deleting after that only forgets the client (and the
        workers refuse the tokens of a client they do not know).
        """
        client = await self.get(client_id)
        if not client.disabled:
            raise AppError(f"client {client_id} is not disabled; disable it first")
        name, scopes = client.name, sorted(client.scope_set)
        await ApiKeyRepository(self.clients.session).delete_for(client_id)
        await self.clients.delete(client)
        await self.audit.record(audit.CLIENT_DELETED, client_id, name=name, scopes=scopes)

    async def limit(self, client_id: str, rps: float | None, burst: int | None) -> Client:
        """Set the client's rate limit (``rps`` None: the default again; 0: no limit)."""
        client = await self.get(client_id)
        if rps is not None and (rps < 0 or (burst is not None and burst < 1)):
            raise AppError("--rps must be 0 or more and --burst at least 1")
        client.rate_limit_rps = rps
        client.rate_limit_burst = burst if rps else None
        await self.audit.record(audit.CLIENT_LIMITED, client_id, rps=rps, burst=burst)
        return client

    async def allow(self, client_id: str, networks: list[str]) -> Client:
        """Let the client call only from ``networks`` (address ranges); empty: from anywhere."""
        client = await self.get(client_id)
        try:
            parsed = [str(n) for n in parse_networks(networks)]
        except ValueError as exc:
            raise AppError(str(exc), code="invalid_network") from exc
        client.allowed_networks = " ".join(parsed) or None
        await self.audit.record(audit.CLIENT_ALLOWLISTED, client_id, networks=parsed)
        return client

    async def list(self) -> list[Client]:
        return await self.clients.all()


def _set_certificate(client: Client, subject: str | None, thumbprints: Sequence[str]) -> None:
    if subject is not None:
        client.auth_method, client.tls_subject_dn = TLS_CLIENT_AUTH, subject_dn(subject)
        client.tls_thumbprints = None
    elif thumbprints:
        client.auth_method, client.tls_subject_dn = SELF_SIGNED_TLS_CLIENT_AUTH, None
        client.tls_thumbprints = " ".join(dict.fromkeys(thumbprints))
    else:
        client.auth_method = CLIENT_SECRET
