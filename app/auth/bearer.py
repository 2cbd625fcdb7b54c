"""Authentication for routes: a Bearer token (RFC 6750) or an API key, the caller and its
scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import APIKeyHeader, OAuth2
from starlette.requests import HTTPConnection

from app.auth.apikeys import ApiKeyAuth
from app.auth.guard import Guard
from app.auth.schemas import SCOPES
from app.auth.service import AuthFailureThrottle
from app.auth.sync import AuthStateSync
from app.auth.tokens import (
    BOUND_ELSEWHERE,
    MAX_AUTHORIZATION_BYTES,
    InvalidTokenError,
    Principal,
    TokenVerifier,
)
from app.core.certs import CERT_KEY
from app.core.errors import AppError
from app.core.parts import part
from app.platform.middleware import CLIENT_ID_KEY


class BearerError(AppError):
    """RFC 6750 errors: 401 invalid_token, 403 insufficient_scope, with WWW-Authenticate."""

    def __init__(
        self, status_code: int, error: str | None, description: str, scope: str | None = None
    ) -> None:
        challenge = 'Bearer realm="enrich"'
        if error:
            challenge += f', error="{error}", error_description="{description}"'
        if scope:
            challenge += f', scope="{scope}"'
        super().__init__(
            description,
            status_code=status_code,
            code=error or "unauthorized",
            headers={"WWW-Authenticate": challenge},
        )


class BearerToken(OAuth2):
    """Reads ``Authorization: Bearer``; documents the client-credentials flow in OpenAPI."""

    def __init__(self) -> None:
        super().__init__(
            flows=OAuthFlows(
                clientCredentials=OAuthFlowClientCredentials(tokenUrl="/oauth/token", scopes=SCOPES)
            ),
            scheme_name="OAuth2",
            description="OAuth 2.0 client credentials: fetch a token at /oauth/token.",
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> str | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        if len(header) > MAX_AUTHORIZATION_BYTES:
            # No token we issue is this long: refused before it is looked at.
            raise BearerError(401, "invalid_token", "the access token is malformed")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            # RFC 6750 3.1: another scheme is as good as no credentials (no error code).
            return None
        if not token.strip():
            raise BearerError(400, "invalid_request", "the Bearer token is empty")
        return token.strip()


bearer_token = BearerToken()

DEFAULT_API_KEY_HEADER = "X-API-Key"


class ApiKeyHeader(APIKeyHeader):
    """Reads the API key from the header ENRICH_API_KEY_HEADER names (``X-API-Key``)."""

    def __init__(self) -> None:
        super().__init__(
            name=DEFAULT_API_KEY_HEADER,
            scheme_name="APIKey",
            description=(
                "A client's API key (`enrich clients api-key create`), in X-API-Key unless "
                "ENRICH_API_KEY_HEADER names another header. The weaker option: prefer OAuth."
            ),
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> str | None:
        settings = getattr(request.app.state, "settings", None)
        name = settings.api_key_header if settings is not None else DEFAULT_API_KEY_HEADER
        return request.headers.get(name) or None


api_key_header = ApiKeyHeader()


@dataclass(frozen=True)
class Authorizer:
    """Checks a caller's token, scope, address and rate: what every protected route runs."""

    verifier: TokenVerifier
    sync: AuthStateSync
    guard: Guard
    api_keys: ApiKeyAuth | None = None
    throttle: AuthFailureThrottle | None = None

    async def authenticate_key(self, key: str, address: str) -> Principal:
        """The API key's client; a wrong key counts as a failed authentication (429 when the
        address failed too often), answered as a bad token is."""
        assert self.api_keys is not None
        try:
            return await self.api_keys.authenticate(key)
        except InvalidTokenError as exc:
            if self.throttle is not None:
                await self.throttle.check(None, address)
                await self.throttle.failed(None, address)
            raise BearerError(401, "invalid_token", str(exc)) from exc

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token``; a token this process verified before costs a dictionary lookup."""
        try:
            return await self.verifier.check(token, self.sync.reload_keys)
        except InvalidTokenError as exc:
            raise BearerError(401, "invalid_token", str(exc)) from exc

    async def authorize(
        self, request: HTTPConnection, token: str | None, scope: str, api_key: str | None = None
    ) -> Principal:
        """The caller, or 401/403 per RFC 6750; then its allowlist (403) and rate limit (429).

        A Bearer token wins over an API key sent with it."""
        client = request.scope.get("client")
        host = client[0] if client else None
        if token is not None:
            principal = await self.authenticate(token)
            if principal.refuses(request.scope.get(CERT_KEY)):
                raise BearerError(401, "invalid_token", BOUND_ELSEWHERE)
        elif api_key is not None and self.api_keys is not None:
            principal = await self.authenticate_key(api_key, host or "unknown")
        else:
            raise BearerError(401, None, "an access token is required")
        if scope not in principal.scopes:
            raise BearerError(
                403, "insufficient_scope", f"the token lacks the {scope} scope", scope=scope
            )
        request.scope[CLIENT_ID_KEY] = principal.client_id  # for the access line
        await self.guard.check(principal.client_id, host)
        return principal


async def get_authorizer(
    verifier: Annotated[TokenVerifier, Depends(part(TokenVerifier))],
    sync: Annotated[AuthStateSync, Depends(part(AuthStateSync))],
    guard: Annotated[Guard, Depends(part(Guard))],
    api_keys: Annotated[ApiKeyAuth, Depends(part(ApiKeyAuth))],
    throttle: Annotated[AuthFailureThrottle, Depends(part(AuthFailureThrottle))],
) -> Authorizer:
    return Authorizer(verifier, sync, guard, api_keys, throttle)


AuthorizerDep = Annotated[Authorizer, Depends(get_authorizer)]


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that returns the caller, or answers 401/403 per RFC 6750 (429 when limited)."""

    # A default value, not an Annotated hint: with postponed annotations the hint is a string
    # that FastAPI resolves in the module's globals, where the closure's ``scope`` is unknown
    # (the parameter would silently become a required query parameter).
    async def dependency(
        request: Request,
        authorizer: AuthorizerDep,
        token: str | None = Security(bearer_token, scopes=[scope]),
        api_key: str | None = Security(api_key_header),
    ) -> Principal:
        return await authorizer.authorize(request, token, scope, api_key)

    return dependency


ProfilesRead = Annotated[Principal, Depends(require_scope("profiles:read"))]
ProfilesWrite = Annotated[Principal, Depends(require_scope("profiles:write"))]
EventsWrite = Annotated[Principal, Depends(require_scope("events:write"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]
