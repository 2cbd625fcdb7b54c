"""The API's documents: ``/openapi.json``, Swagger UI (``/docs``) and ReDoc (``/redoc``).

The pages are served from the service itself, not from a CDN: FastAPI's default pages load
their JavaScript from cdn.jsdelivr.net, so on a host without internet access ``/docs`` would be
a blank page. The assets ship in the ``fastapi-offline`` wheel (Swagger UI 5 and ReDoc, about
2.8 MB) and are served under ``/docs/assets``; the pages are built with FastAPI's own helpers.

Who may read them is ``ENRICH_DOCS`` (``Settings.docs_access``):

- ``public``: anyone (development and test).
- ``admin``: a client with the ``admin`` scope, by its client_id and secret as HTTP Basic
  credentials (a browser asks for them and sends them again for the page's own request of
  ``/openapi.json``), or by an access token with ``admin`` (``curl``, schemathesis, Postman).
  The assets are the two libraries, nothing of this service, and stay open.
- ``off``: none of these paths exist (404); the default in production.

Every page carries a Content-Security-Policy that allows only this origin's scripts and the
page's own inline scripts by their hash, and forbids framing (clickjacking) and MIME sniffing.
Create the app with ``openapi_url=None, docs_url=None, redoc_url=None`` and call
``install_docs(app, settings.docs_access)``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.bearer import Authorizer, BearerError, bearer_token
from app.auth.guard import Guard
from app.auth.router import client_address, client_credentials
from app.auth.service import AuthFailureThrottle, OAuthError, OAuthService
from app.auth.sync import AuthStateSync
from app.auth.tokens import TokenIssuer, TokenVerifier
from app.core.errors import AppError
from app.core.parts import parts_of
from app.core.responses import JSONResponse
from app.platform.middleware import CLIENT_ID_KEY

DocsAccess = Literal["public", "admin", "off"]

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
# What the pages load, and nothing more: scripts from this origin (the two libraries) plus
# the page's own inline scripts by hash; fetches of the document, the token endpoint and the
# API from this origin; images inlined by the stylesheets (data:). Styles: ReDoc's
# styled-components insert <style> elements at run time, which only 'unsafe-inline' allows
# (a style cannot run code). Workers: ReDoc's search index runs in a blob: worker. Checked in
# Chromium with both pages (tests/qa/swagger_ui.mjs fails on any refusal).
_POLICY = (
    "default-src 'none'",
    "script-src {scripts}",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "object-src 'none'",
)
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def assets_dir() -> Path:
    return Path(fastapi_offline.__file__).parent / "static"


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(html: str) -> str:
    """The policy for ``html``: its inline scripts are allowed by hash, no other inline code."""
    scripts = " ".join(["'self'", *(_sha256(code) for code in _INLINE_SCRIPT.findall(html))])
    return "; ".join(_POLICY).format(scripts=scripts)


def protected_page(response: HTMLResponse) -> HTMLResponse:
    """Add the policy and the anti-framing and anti-sniffing headers to a docs page."""
    html = bytes(response.body).decode()
    response.headers["Content-Security-Policy"] = content_security_policy(html)
    response.headers.update(PAGE_HEADERS)
    return response


class NoSniff:
    """Send ``X-Content-Type-Options: nosniff`` with every answer of ``app`` (the assets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_header)


class DocsUnauthorizedError(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        # Basic, so that a browser asks for the client_id and secret (see the module docstring).
        super().__init__(
            message, headers={"WWW-Authenticate": 'Basic realm="enrich docs", charset="UTF-8"'}
        )


async def admit_admin(request: Request) -> None:
    """Let in a client with the ``admin`` scope (HTTP Basic or a Bearer token), else 401/403."""
    parts = parts_of(request)
    verifier, sync = parts.get(TokenVerifier), parts.get(AuthStateSync)
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        authorizer = Authorizer(verifier, sync, parts.get(Guard))
        await authorizer.authorize(request, await bearer_token(request), "admin")
        return
    if not header:
        raise DocsUnauthorizedError("the docs need the credentials of a client with admin")
    try:
        credentials = client_credentials(request, {})
        async with parts.get(async_sessionmaker)() as session:
            service = OAuthService(
                session,
                parts.get(TokenIssuer),
                verifier,
                parts.get(AuthFailureThrottle),
                sync.reload_keys,
            )
            client = await service.authenticate(credentials, client_address(request))
    except OAuthError as exc:
        if exc.status_code in (400, 401):
            raise DocsUnauthorizedError(f"client authentication failed: {exc.message}") from exc
        raise AppError(
            exc.message, status_code=exc.status_code, code=exc.code, headers=exc.headers
        ) from exc
    request.scope[CLIENT_ID_KEY] = client.client_id  # for the access line
    if "admin" not in client.scope_set:
        raise BearerError(403, "insufficient_scope", "the client lacks the admin scope")


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: Endpoint, access: DocsAccess) -> Endpoint:
    if access != "admin":
        return endpoint

    async def guarded(request: Request) -> Response:
        await admit_admin(request)
        return await endpoint(request)

    return guarded


def install_docs(app: FastAPI, access: DocsAccess) -> None:
    """Serve the document and the two pages as ``access`` says (nothing when ``off``)."""
    if access == "off":
        return
    app.mount(ASSETS_URL, NoSniff(StaticFiles(directory=assets_dir())), name="docs-assets")
    for path, endpoint in (
        (OPENAPI_URL, document(app)),
        (DOCS_URL, page(app, swagger_ui_html)),
        (REDIRECT_URL, page(app, oauth2_redirect_html)),
        (REDOC_URL, page(app, redoc_html)),
    ):
        # Starlette routes: GET answers HEAD too.
        app.add_route(path, _guarded(endpoint, access), methods=["GET"], include_in_schema=False)


def root_path(request: Request) -> str:
    """Where the service is mounted behind a proxy (``--root-path``), without a trailing slash."""
    root: str = request.scope.get("root_path", "").rstrip("/")
    return root


def document(app: FastAPI) -> Endpoint:
    """The endpoint of ``/openapi.json`` (naming the root path as a server when there is one)."""

    async def openapi(request: Request) -> Response:
        root = root_path(request)
        schema = app.openapi()
        if root and app.root_path_in_servers:
            if root not in {server.get("url") for server in schema.get("servers", [])}:
                schema = {**schema, "servers": [{"url": root}, *schema.get("servers", [])]}
        return JSONResponse(schema, headers={"X-Content-Type-Options": "nosniff"})

    return openapi


PageBuilder = Callable[[FastAPI, str], HTMLResponse]


def page(app: FastAPI, build: PageBuilder) -> Endpoint:
    """The endpoint of a docs page: ``build(app, root path)``, with its policy and headers."""

    async def endpoint(request: Request) -> Response:
        return protected_page(build(app, root_path(request)))

    return endpoint


def swagger_ui_html(app: FastAPI, root: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{REDIRECT_URL}",
        init_oauth=app.swagger_ui_init_oauth,
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


def oauth2_redirect_html(_app: FastAPI, _root: str) -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def redoc_html(app: FastAPI, root: str) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
