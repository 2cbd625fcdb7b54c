"""OAuth rules: client secrets, client authentication, tokens, revocation and introspection."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import log as audit
from app.audit.log import AuditLog
from app.auth.repository import ClientRepository, KeyRepository, RevocationRepository
from app.auth.schemas import SCOPES, IntrospectionResponse, TokenResponse
from app.auth.tokens import (
    InvalidTokenError,
    KeyLoader,
    KeyRing,
    TokenIssuer,
    TokenVerifier,
    expires_at,
    new_signing_key,
)
from app.core.addresses import NetworkSet, parse_networks
from app.core.errors import AppError, NotFoundError
from app.core.models import Client
from app.core.models.base import utcnow
from app.platform.kv import Cache

SECRET_SCHEME = "sha256"

log = structlog.get_logger(__name__)


class OAuthError(AppError):
    """An RFC 6749 section 5.2 error, rendered as ``{"error", "error_description"}``."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status_code: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description, status_code=status_code, code=error, headers=headers)


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


# Compared against when the client is unknown, so both failures take the same path.
_DUMMY_HASH = hash_secret(generate_secret())
# The clients.client_id column's length; longer ids cannot exist.
MAX_CLIENT_ID_LENGTH = 128


def _plausible_client_id(client_id: str) -> bool:
    # A NUL byte is an error in a PostgreSQL query, not a miss, and no id is that long.
    return len(client_id) <= MAX_CLIENT_ID_LENGTH and client_id.isprintable()


def parse_scopes(raw: str) -> list[str]:
    scopes = sorted(set(raw.split()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise AppError(
            f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}",
            code="invalid_scope",
        )
    return scopes


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str
    method: str  # "client_secret_basic" or "client_secret_post"


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
    ) -> tuple[Client, str]:
        scope_list = parse_scopes(scopes)
        if not scope_list:
            raise AppError("a client needs at least one scope", code="invalid_scope")
        secret = secret or generate_secret()
        client = Client(
            client_id=client_id or generate_client_id(),
            name=name,
            secret_hash=hash_secret(secret),
            scopes=" ".join(scope_list),
            disabled=False,
            created_at=utcnow(),
        )
        await self.clients.add(client)
        await self.audit.record(
            audit.CLIENT_CREATED, client.client_id, name=name, scopes=scope_list
        )
        return client, secret

    async def get(self, client_id: str) -> Client:
        client = await self.clients.get(client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id}")
        return client

    async def rotate(self, client_id: str) -> tuple[Client, str]:
        """Give the client a new secret; the old one stops working, issued tokens stay valid."""
        client = await self.get(client_id)
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


class AuthFailureThrottle:
    """Counts failed client authentications per client_id and per source address."""

    def __init__(
        self, cache: Cache, per_client: int, per_address: int, window_seconds: int
    ) -> None:
        self.cache = cache
        self.per_client = per_client
        self.per_address = per_address
        self.window = window_seconds

    @staticmethod
    def _keys(client_id: str, address: str) -> tuple[str, str]:
        digest = hashlib.sha256(client_id.encode()).hexdigest()[:32]
        return f"authfail:c:{digest}", f"authfail:a:{address}"

    async def check(self, client_id: str, address: str) -> None:
        """Raise 429 when the client_id or the address has failed too often in the window."""
        client_key, address_key = self._keys(client_id, address)
        try:
            client_count, address_count = await self.cache.counts(client_key, address_key)
        except Exception as exc:
            # Fail open: with 256-bit secrets the lock is defence in depth, and a Redis outage
            # must not stop Personalize from getting tokens.
            log.warning("auth_throttle.unavailable", error=type(exc).__name__)
            return
        blocked = None
        if client_count >= self.per_client:
            blocked = client_key
        elif address_count >= self.per_address:
            blocked = address_key
        if blocked is not None:
            try:
                retry_after = max(1, await self.cache.ttl(blocked))
            except Exception:
                retry_after = self.window
            raise OAuthError(
                "too_many_requests",
                "too many failed authentications; retry later",
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )

    async def failed(self, client_id: str, address: str) -> None:
        client_key, address_key = self._keys(client_id, address)
        try:
            await self.cache.incr(client_key, self.window)
            await self.cache.incr(address_key, self.window)
        except Exception as exc:  # fail open, as in check()
            log.warning("auth_throttle.unavailable", error=type(exc).__name__)


class OAuthService:
    """The token, revocation and introspection endpoints' rules."""

    def __init__(
        self,
        session: AsyncSession,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        throttle: AuthFailureThrottle,
        reload_keys: KeyLoader,
    ) -> None:
        self.clients = ClientRepository(session)
        self.revocations = RevocationRepository(session)
        self.issuer = issuer
        self.verifier = verifier
        self.throttle = throttle
        self.reload_keys = reload_keys

    async def authenticate(self, credentials: ClientCredentials | None, address: str) -> Client:
        """Return the client, or fail the same way for an unknown client and a wrong secret."""
        if credentials is None:
            raise OAuthError(
                "invalid_client",
                "client authentication is required (HTTP Basic or client_id/client_secret)",
                status_code=401,
            )
        client = None
        if _plausible_client_id(credentials.client_id):
            client = await self.clients.get(credentials.client_id)
        valid = verify_secret(
            credentials.client_secret, client.secret_hash if client else _DUMMY_HASH
        )
        if client is None or not valid or client.disabled:
            # Only failures meet the lock: the right secret always gets through, or anyone who
            # knows a client_id (it is in every token) could shut that client out with a few
            # wrong guesses. With 256-bit secrets guessing is hopeless anyway; the lock turns
            # a flood of guesses into cheap 429s that ops can see.
            await self.throttle.check(credentials.client_id, address)
            await self.throttle.failed(credentials.client_id, address)
            headers = None
            if credentials.method == "client_secret_basic":
                headers = {"WWW-Authenticate": 'Basic realm="enrich", charset="UTF-8"'}
            raise OAuthError(
                "invalid_client", "client authentication failed", status_code=401, headers=headers
            )
        if client.allowed_networks and address not in NetworkSet.parse(client.allowed_networks):
            raise OAuthError(
                "access_denied", "this client may not call from this address", status_code=403
            )
        return client

    def issue(self, client: Client, requested_scope: str | None) -> TokenResponse:
        allowed = client.scope_set
        if not allowed:
            raise OAuthError("unauthorized_client", "the client has no scopes to grant")
        if requested_scope is None or not requested_scope.strip():
            granted = sorted(allowed)
        else:
            requested = set(requested_scope.split())
            outside = requested - allowed
            if outside:
                raise OAuthError(
                    "invalid_scope",
                    f"scope not granted to this client: {' '.join(sorted(outside))}",
                )
            granted = sorted(requested)
        token, claims = self.issuer.issue(client.client_id, granted)
        return TokenResponse(
            access_token=token,
            token_type="Bearer",
            expires_in=int(claims["exp"]) - int(claims["iat"]),
            scope=claims["scope"],
        )

    async def revoke(self, caller: Client, token: str) -> None:
        """Revoke a token of the caller's (any token for ``admin``); unknown tokens are ignored."""
        try:
            principal = await self.verifier.check(token, self.reload_keys)
        except InvalidTokenError:
            return  # RFC 7009 2.2: invalid, expired or already revoked tokens are not errors
        if principal.client_id != caller.client_id and "admin" not in caller.scope_set:
            return  # not the caller's: do nothing, and do not tell it whether the token exists
        await self.revocations.add(principal.jti, principal.client_id, expires_at(principal.claims))
        self.verifier.revoked.add(principal.jti, principal.exp)

    async def introspect(self, caller: Client, token: str) -> IntrospectionResponse:
        try:
            principal = await self.verifier.check(token, self.reload_keys)
        except InvalidTokenError:
            return IntrospectionResponse(active=False)
        if principal.client_id != caller.client_id and "admin" not in caller.scope_set:
            return IntrospectionResponse(active=False)
        claims: dict[str, Any] = principal.claims
        return IntrospectionResponse(
            active=True,
            scope=claims.get("scope", ""),
            client_id=principal.client_id,
            token_type="Bearer",
            exp=principal.exp,
            iat=principal.iat,
            nbf=claims.get("nbf"),
            sub=claims.get("sub"),
            aud=claims.get("aud"),
            iss=claims.get("iss"),
            jti=principal.jti,
        )


class KeyService:
    def __init__(self, session: AsyncSession, actor: str | None = None) -> None:
        self.keys = KeyRepository(session)
        self.audit = AuditLog(session, actor)

    async def ensure_active(self, algorithm: str) -> None:
        """Create the first signing key on first start."""
        rows = await self.keys.all()
        if not any(row.retired_at is None for row in rows):
            await self.keys.add_active(new_signing_key(algorithm), retire_others=False)

    async def rotate(self, algorithm: str, token_ttl: int) -> str:
        """Make a new key active; keys retired over two lifetimes ago are dropped."""
        key = new_signing_key(algorithm)
        await self.keys.add_active(key, retire_others=True)
        await self.keys.delete_retired_before(utcnow() - timedelta(seconds=2 * token_ttl + 600))
        await self.audit.record(audit.KEY_ROTATED, key.kid, algorithm=algorithm)
        return key.kid

    async def load_into(self, keyring: KeyRing) -> None:
        keyring.load(await self.keys.all())
