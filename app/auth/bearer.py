"""Bearer authentication for routes: the token, the caller and its scopes (RFC 6750)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2
from starlette.requests import HTTPConnection

from app.auth.guard import Guard
from app.auth.schemas import SCOPES
from app.auth.sync import AuthStateSync
from app.auth.tokens import MAX_AUTHORIZATION_BYTES, InvalidTokenError, Principal, TokenVerifier
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


@dataclass(frozen=True)
class Authorizer:
    """Checks a caller's token, scope, address and rate: what every protected route runs."""

    verifier: TokenVerifier
    sync: AuthStateSync
    guard: Guard

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token``; a token this process verified before costs a dictionary lookup."""
        try:
            return await self.verifier.check(token, self.sync.reload_keys)
        except InvalidTokenError as exc:
            raise BearerError(401, "invalid_token", str(exc)) from exc

    async def authorize(self, request: HTTPConnection, token: str | None, scope: str) -> Principal:
        """The caller, or 401/403 per RFC 6750; then its allowlist (403) and rate limit (429)."""
        if token is None:
            raise BearerError(401, None, "an access token is required")
        principal = await self.authenticate(token)
        if scope not in principal.scopes:
            raise BearerError(
                403, "insufficient_scope", f"the token lacks the {scope} scope", scope=scope
            )
        request.scope[CLIENT_ID_KEY] = principal.client_id  # for the access line
        client = request.scope.get("client")
        await self.guard.check(principal.client_id, client[0] if client else None)
        return principal


async def get_authorizer(
    verifier: Annotated[TokenVerifier, Depends(part(TokenVerifier))],
    sync: Annotated[AuthStateSync, Depends(part(AuthStateSync))],
    guard: Annotated[Guard, Depends(part(Guard))],
) -> Authorizer:
    return Authorizer(verifier, sync, guard)


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
    ) -> Principal:
        return await authorizer.authorize(request, token, scope)

    return dependency


ProfilesRead = Annotated[Principal, Depends(require_scope("profiles:read"))]
ProfilesWrite = Annotated[Principal, Depends(require_scope("profiles:write"))]
EventsWrite = Annotated[Principal, Depends(require_scope("events:write"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]
