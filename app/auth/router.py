"""OAuth 2.0 endpoints: token (RFC 6749 4.4), revocation (RFC 7009), introspection (RFC 7662),
server metadata (RFC 8414) and the JWKS."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Depends, FastAPI, Request, Response, Security
from fastapi.openapi.models import HTTPBase
from fastapi.security.base import SecurityBase

from app.auth.certauth import CERTIFICATE_METHODS, CertificateAuthorities
from app.auth.schemas import (
    SCOPES,
    IntrospectionResponse,
    OAuthErrorResponse,
    TokenResponse,
)
from app.auth.service import (
    CERTIFICATE,
    AuthFailureThrottle,
    ClientCredentials,
    OAuthError,
    OAuthService,
)
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, TokenIssuer, TokenVerifier
from app.core.certs import CERT_DER_KEY, CERT_KEY
from app.core.db import SessionDep
from app.core.errors import BodyTooLargeError
from app.core.parts import part
from app.core.responses import JSONResponse
from app.core.settings import SettingsDep
from app.platform.metrics import TOKENS_ISSUED, TOKENS_REFUSED
from app.platform.middleware import CLIENT_ID_KEY
from app.platform.tracing import SpansDep, note

router = APIRouter(tags=["OAuth 2.0"])

# A token request is a few hundred bytes; anything near this is not one.
MAX_FORM_BYTES = 16_384
# The form parameters these endpoints read (each at most once).
PARAMETERS = frozenset(
    ("grant_type", "scope", "client_id", "client_secret", "token", "token_type_hint")
)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _form_body(properties: dict[str, Any], required: list[str], example: dict[str, str]) -> Any:
    schema = {
        "type": "object",
        "required": required,
        "properties": properties,
        # client_secret_post sends both; tls_client_auth the client_id alone (RFC 8705 2).
        "dependentRequired": {"client_secret": ["client_id"]},
    }
    return {
        # HTTP Basic (client_secret_basic), the form fields (client_secret_post), or the
        # client_id and a client certificate (tls_client_auth, self_signed_tls_client_auth).
        "security": [{}],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema, "example": example}
            },
        },
    }


_CLIENT_FIELDS = {
    "client_id": {
        "type": "string",
        "minLength": 1,
        "description": "client_secret_post, or alone with a client certificate",
    },
    "client_secret": {
        "type": "string",
        "format": "password",
        "description": "client_secret_post only",
    },
}
_TOKEN_BODY = _form_body(
    {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {"type": "string", "description": "space-separated; default: all of the client's"},
        **_CLIENT_FIELDS,
    },
    ["grant_type"],
    {"grant_type": "client_credentials", "scope": "profiles:read"},
)
_TOKEN_PARAM_BODY = _form_body(
    {
        "token": {"type": "string", "minLength": 1},
        "token_type_hint": {"type": "string"},
        **_CLIENT_FIELDS,
    },
    ["token"],
    {"token": "eyJ...", "token_type_hint": "access_token"},
)
_NO_STORE_HEADERS = {
    name: {"description": f"`{value}`", "schema": {"type": "string"}}
    for name, value in NO_STORE.items()
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorResponse, "description": "invalid_request, invalid_scope, ..."},
    401: {
        "model": OAuthErrorResponse,
        "description": "invalid_client: unknown client, wrong secret, or disabled",
        "headers": {
            "WWW-Authenticate": {
                "description": 'when HTTP Basic was used: `Basic realm="enrich", charset="UTF-8"`',
                "schema": {"type": "string"},
            }
        },
    },
    403: {
        "model": OAuthErrorResponse,
        "description": "access_denied: the client may not call from this address (its allowlist)",
    },
    413: {"model": OAuthErrorResponse, "description": "the form is too large"},
    429: {
        "model": OAuthErrorResponse,
        "description": "too many failed authentications",
        "headers": {
            "Retry-After": {
                "description": "seconds until the lockout ends",
                "schema": {"type": "string"},
            }
        },
    },
}


async def read_form(request: Request) -> dict[str, str]:
    """Parse an urlencoded body strictly: UTF-8, each parameter at most once."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "the form is too large", status_code=413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise OAuthError("invalid_request", "the form is too large", status_code=413)
    except BodyTooLargeError as exc:
        raise OAuthError("invalid_request", "the form is too large", status_code=413) from exc
    try:
        pairs = parse_qsl(
            bytes(body).decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the form is not valid UTF-8 urlencoded data") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 3.2 forbids repeating a parameter; items this server ignores may repeat.
        if name in form and name in PARAMETERS:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        form.setdefault(name, value)
    return form


FormDep = Annotated[dict[str, str], Depends(read_form)]


class ClientSecretBasic(SecurityBase):
    """Documents client_secret_basic in OpenAPI; ``client_credentials`` reads the header."""

    def __init__(self) -> None:
        self.model = HTTPBase(
            scheme="basic",
            description="client_secret_basic: client_id and client_secret as HTTP Basic "
            "credentials; or send them as form fields instead (client_secret_post)",
        )
        self.scheme_name = "ClientSecretBasic"

    async def __call__(self) -> None:
        return None


ClientAuthDoc = Annotated[None, Security(ClientSecretBasic())]


def client_credentials(request: Request, form: dict[str, str]) -> ClientCredentials | None:
    """Read client_secret_basic or client_secret_post credentials, refusing a mix of both, or
    a client_id alone (or with an empty secret, as a connection whose secret field is empty
    sends it): the client's certificate is then its credential (RFC 8705, section 2)."""
    header = request.headers.get("authorization")
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if header:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_request", "the Authorization header must use Basic")
        basic_failure = OAuthError(
            "invalid_client",
            "malformed Basic credentials",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="enrich", charset="UTF-8"'},
        )
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise basic_failure from exc
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep or not raw_id:
            raise basic_failure
        # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined and encoded.
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if form_secret is not None:
            raise OAuthError(
                "invalid_request", "use one client authentication method, not Basic and the form"
            )
        if form_id is not None and form_id != client_id:
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
        if not secret:  # (Personalize's Header option with an empty secret: the certificate)
            return ClientCredentials(client_id, "", CERTIFICATE)
        return ClientCredentials(client_id, secret, "client_secret_basic")
    if form_id is None and form_secret is None:
        return None
    if not form_id:
        raise OAuthError("invalid_request", "client_secret needs a client_id")
    if not form_secret:
        return ClientCredentials(form_id, "", CERTIFICATE)
    return ClientCredentials(form_id, form_secret, "client_secret_post")


def client_address(request: Request) -> str:
    """The caller's address: the peer, or whom a trusted proxy named (see AccessMiddleware)."""
    return request.client.host if request.client else "unknown"


async def oauth_service(
    session: SessionDep,
    issuer: Annotated[TokenIssuer, Depends(part(TokenIssuer))],
    verifier: Annotated[TokenVerifier, Depends(part(TokenVerifier))],
    throttle: Annotated[AuthFailureThrottle, Depends(part(AuthFailureThrottle))],
    sync: Annotated[AuthStateSync, Depends(part(AuthStateSync))],
    authorities: Annotated[CertificateAuthorities, Depends(part(CertificateAuthorities))],
) -> OAuthService:
    return OAuthService(session, issuer, verifier, throttle, sync.reload_keys, authorities)


ServiceDep = Annotated[OAuthService, Depends(oauth_service)]


@router.post(
    "/oauth/token",
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=_TOKEN_BODY,
    summary="Issue an access token (client credentials)",
)
async def token(
    request: Request, service: ServiceDep, spans: SpansDep, _: ClientAuthDoc
) -> JSONResponse:
    """Issue an access token for the client_credentials grant (RFC 6749 section 4.4).

    Authenticate with HTTP Basic (client_secret_basic) or with client_id and client_secret
    form fields (client_secret_post). Optional `scope` narrows the grant; other form items
    (such as `audience`) are ignored. A caller that presented a client certificate on the
    TLS connection gets a token bound to it (RFC 8705: its `cnf` claim), which then works only
    over connections that present the same certificate.
    """
    try:
        form = await read_form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        credentials = client_credentials(request, form)
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
        with spans.child("oauth.client.authenticate"):
            client = await service.authenticate(
                credentials, client_address(request), request.scope.get(CERT_DER_KEY)
            )
        request.scope[CLIENT_ID_KEY] = client.client_id  # for the access line
        with spans.child("oauth.token.sign"):
            answer = service.issue(client, form.get("scope"), request.scope.get(CERT_KEY))
    except OAuthError as exc:
        note("oauth.error", exc.code)  # (on the request's span, when traced)
        TOKENS_REFUSED.labels(exc.code).inc()
        raise
    TOKENS_ISSUED.inc()
    return JSONResponse(answer.model_dump(), headers=NO_STORE)


@router.post(
    "/oauth/revoke",
    # RFC 7009 2.2: the answer is a bare 200; it has no body, so no media type.
    response_class=Response,
    responses={
        **_ERRORS,
        200: {
            "description": "revoked, or nothing to revoke (no body)",
            "headers": _NO_STORE_HEADERS,
        },
    },
    openapi_extra=_TOKEN_PARAM_BODY,
    summary="Revoke an access token",
)
async def revoke(
    request: Request, form: FormDep, service: ServiceDep, _: ClientAuthDoc
) -> Response:
    """Revoke an access token (RFC 7009); every worker refuses it within a second.

    Answers 200 for unknown, expired or foreign tokens too, so nothing leaks.
    """
    credentials = client_credentials(request, form)
    caller = await service.authenticate(
        credentials, client_address(request), request.scope.get(CERT_DER_KEY)
    )
    request.scope[CLIENT_ID_KEY] = caller.client_id
    token_value = form.get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required")
    await service.revoke(caller, token_value)
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/oauth/introspect",
    response_model=IntrospectionResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    openapi_extra=_TOKEN_PARAM_BODY,
    summary="Introspect an access token",
)
async def introspect(
    request: Request, form: FormDep, service: ServiceDep, _: ClientAuthDoc
) -> JSONResponse:
    """Tell whether a token is active (RFC 7662).

    A client sees only its own tokens as active, unless it has the `admin` scope.
    """
    credentials = client_credentials(request, form)
    caller = await service.authenticate(
        credentials, client_address(request), request.scope.get(CERT_DER_KEY)
    )
    request.scope[CLIENT_ID_KEY] = caller.client_id
    token_value = form.get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required")
    answer = await service.introspect(caller, token_value)
    return JSONResponse(answer.model_dump(exclude_none=True), headers=NO_STORE)


@router.get("/.well-known/oauth-authorization-server", summary="Authorization server metadata")
async def metadata(
    settings: SettingsDep, issuer: Annotated[TokenIssuer, Depends(part(TokenIssuer))]
) -> dict[str, Any]:
    """Describe this authorization server (RFC 8414)."""
    base = settings.public_url.rstrip("/")
    methods = ["client_secret_basic", "client_secret_post", *CERTIFICATE_METHODS]
    return {
        "issuer": issuer.issuer,
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_methods_supported": methods,
        "scopes_supported": list(SCOPES),
        # A token asked for over a connection with a client certificate is bound to it.
        "tls_client_certificate_bound_access_tokens": True,
    }


@router.get("/.well-known/jwks.json", summary="Token signing keys (JWKS)")
async def jwks(keyring: Annotated[KeyRing, Depends(part(KeyRing))]) -> JSONResponse:
    """Public keys of the access-token signers, each with its `kid`."""
    return JSONResponse(keyring.jwks(), headers={"Cache-Control": "max-age=300"})


def install_oauth_errors(app: FastAPI) -> None:
    """Answer ``OAuthError`` in RFC 6749 section 5.2's shape, ``{"error", "error_description"}``,
    never stored (the other errors keep the service's ``{"error", "detail"}``)."""

    @app.exception_handler(OAuthError)
    async def _oauth_error(_request: Request, exc: OAuthError) -> JSONResponse:
        headers = {"Cache-Control": "no-store", **(exc.headers or {})}
        return JSONResponse(
            {"error": exc.code, "error_description": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )
