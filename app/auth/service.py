"""OAuth rules: client authentication, the failure lock, tokens, revocation and introspection."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.certauth import CERTIFICATE_METHODS, CertificateAuthorities
from app.auth.clients import generate_secret, hash_secret, verify_secret
from app.auth.repository import ClientRepository, RevocationRepository
from app.auth.schemas import IntrospectionResponse, TokenResponse
from app.auth.tokens import (
    InvalidTokenError,
    KeyLoader,
    TokenIssuer,
    TokenVerifier,
    expires_at,
)
from app.core.addresses import NetworkSet
from app.core.errors import AppError
from app.core.models import Client
from app.platform.kv import Cache

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


# Compared against when the client is unknown, so both failures take the same path.
_DUMMY_HASH = hash_secret(generate_secret())
# The clients.client_id column's length; longer ids cannot exist.
MAX_CLIENT_ID_LENGTH = 128


def _plausible_client_id(client_id: str) -> bool:
    # A NUL byte is an error in a PostgreSQL query, not a miss, and no id is that long.
    return len(client_id) <= MAX_CLIENT_ID_LENGTH and client_id.isprintable()


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str  # ("" with the certificate method)
    # "client_secret_basic", "client_secret_post", or CERTIFICATE: the client_id alone,
    # for a client that authenticates with its certificate (RFC 8705, section 2).
    method: str


CERTIFICATE = "certificate"


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
    def _keys(client_id: str | None, address: str) -> tuple[str, str]:
        # No client_id (a wrong API key names none): the address alone counts; the client
        # key is then one no failure ever increments.
        digest = hashlib.sha256((client_id or "").encode()).hexdigest()[:32]
        return f"authfail:c:{digest if client_id else '-'}", f"authfail:a:{address}"

    async def check(self, client_id: str | None, address: str) -> None:
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

    async def failed(self, client_id: str | None, address: str) -> None:
        client_key, address_key = self._keys(client_id, address)
        try:
            if client_id:
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
        authorities: CertificateAuthorities | None = None,
    ) -> None:
        self.clients = ClientRepository(session)
        self.revocations = RevocationRepository(session)
        self.issuer = issuer
        self.verifier = verifier
        self.throttle = throttle
        self.reload_keys = reload_keys
        self.authorities = authorities or CertificateAuthorities(None)

    async def authenticate(
        self, credentials: ClientCredentials | None, address: str, certificate: bytes | None = None
    ) -> Client:
        """Return the client, or fail the same way for an unknown client, a wrong secret and a
        certificate that is not the client's (``certificate``: the DER the caller presented)."""
        if credentials is None:
            raise OAuthError(
                "invalid_client",
                "client authentication is required (HTTP Basic, client_id and client_secret, "
                "or client_id and a client certificate)",
                status_code=401,
            )
        client = None
        if _plausible_client_id(credentials.client_id):
            client = await self.clients.get(credentials.client_id)
        if client is not None and client.auth_method in CERTIFICATE_METHODS:
            # Its certificate and nothing else: it has no secret (RFC 8705, section 2).
            valid = credentials.method == CERTIFICATE and self.authorities.identifies(
                client, certificate
            )
        else:
            valid = credentials.method != CERTIFICATE and verify_secret(
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

    def issue(
        self, client: Client, requested_scope: str | None, certificate: str | None = None
    ) -> TokenResponse:
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
        token, claims = self.issuer.issue(client.client_id, granted, certificate)
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
            cnf=claims.get("cnf"),
        )
