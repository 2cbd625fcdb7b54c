"""What the OpenAPI document says about errors, shared by the routers of the protected API.

Every protected operation lists the errors it can answer, each with the ``{"error", "detail"}``
schema, an example and the headers that come with it (``WWW-Authenticate`` on 401 and 403,
``Retry-After`` on 429 and 503). ``method_not_allowed`` makes a path answer 405 with an
``Allow`` header that names every method of the path, not only those of the route that
happened to match first (Starlette's default when one path has several routes).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.core.errors import AppError

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


class ValidationIssue(BaseModel):
    """One reason a document was refused (422)."""

    loc: list[str | int] = Field(description="where: body, then the member path")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error of the protected API (the OAuth endpoints answer RFC 6749 errors)."""

    error: str = Field(description="a stable code, such as invalid_token or not_found")
    detail: str | list[ValidationIssue] = Field(
        description="what went wrong, for people; a list of issues for validation_error"
    )


_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'RFC 6750 challenge: `Bearer realm="enrich", error="..."`',
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
_RATE_LIMIT = {
    **_RETRY_AFTER,
    "RateLimit-Limit": {
        "description": "the client's requests per second",
        "schema": {"type": "string"},
    },
    "RateLimit-Remaining": {"description": "requests left now: 0", "schema": {"type": "string"}},
    "RateLimit-Reset": {
        "description": "seconds until a request is let in",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {"description": "`<rate>;w=1;burst=<burst>`", "schema": {"type": "string"}},
}
# status -> (description, example error, example detail, headers)
CATALOG: dict[int, tuple[str, str, str, dict[str, Any]]] = {
    400: (
        "Bad request: an invalid identifier, malformed JSON, or an empty Bearer token",
        "invalid_identifier",
        "invalid identifier type 'e-mail': use [a-z][a-z0-9_]{0,31}",
        {},
    ),
    401: (
        "No access token, or one that is malformed, expired, revoked or of a disabled client",
        "invalid_token",
        "the token has expired",
        _AUTHENTICATE,
    ),
    403: (
        "The token lacks the operation's scope (insufficient_scope, the scope named in "
        "`WWW-Authenticate`), or the client may not call from this address (forbidden)",
        "insufficient_scope",
        "the token lacks the profiles:read scope",
        _AUTHENTICATE,
    ),
    404: ("No profile has this identifier", "not_found", "no profile has identifier ...", {}),
    409: (
        "An identifier belongs to another profile",
        "conflict",
        "identifier email 'jane@example.com' belongs to another profile",
        {},
    ),
    410: (
        "What the request names is retired",
        "view_retired",
        "view 'web_offer@1' is retired; the latest is 'web_offer@2'",
        {},
    ),
    413: (
        "The request body is larger than the limit (1 MB; bulk: a setting)",
        "payload_too_large",
        "request body exceeds 1048576 bytes",
        {},
    ),
    415: (
        "The body's media type is not one the operation reads",
        "unsupported_media_type",
        "send the patch as application/merge-patch+json",
        {},
    ),
    422: (
        "The document does not follow the schema",
        "validation_error",
        "body.identifiers: Field required",
        {},
    ),
    429: (
        "The client's rate limit is exceeded (`enrich clients limit`)",
        "too_many_requests",
        "the client's rate limit is exceeded; retry later",
        _RATE_LIMIT,
    ),
    503: (
        "Profile data is unavailable right now (the database did not answer in time)",
        "service_unavailable",
        "profile data is unavailable right now; retry shortly",
        _RETRY_AFTER,
    ),
}
PROTECTED = (400, 401, 403)


def errors(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses; ``s404="..."`` overrides a description.

    An operation that takes a token (401) also answers 429: every authorized request counts
    against the client's rate limit.
    """
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, code, detail, headers = CATALOG[status]
        description = descriptions.get(f"s{status}", description)
        example: dict[str, Any] = {"error": code, "detail": detail}
        if status == 422:
            example["detail"] = [
                {"loc": ["body", "identifiers"], "msg": "Field required", "type": "missing"}
            ]
        response: dict[str, Any] = {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
        if headers:
            response["headers"] = headers
        responses[status] = response
    # Also keeps FastAPI from documenting its own 422 shape where no validation can fail.
    responses["4XX"] = {
        "model": ErrorResponse,
        "description": "Another client error, such as 405 for a method the path does not have",
    }
    return responses


def method_not_allowed(
    router: APIRouter,
    path: str,
    allowed: Iterable[str],
    route_class: type[APIRoute] | None = None,
) -> None:
    """Answer every other method on ``path`` with 405 and an ``Allow`` naming ``allowed``
    (``route_class``: the path's own route class, when it matches in its own way).

    Add it after the path's real routes: Starlette picks a full match before a partial one.
    """
    allowed = sorted(set(allowed))
    others = [method for method in ALL_METHODS if method not in allowed]
    allow = ", ".join(allowed)

    async def not_allowed(_request: Request) -> None:
        raise AppError(
            f"use {allow}",
            status_code=405,
            code="method_not_allowed",
            headers={"Allow": allow},
        )

    router.add_api_route(
        path,
        not_allowed,
        methods=others,
        include_in_schema=False,
        route_class_override=route_class or router.route_class,
    )


# FastAPI writes the document with exclude_none, which also drops every null inside examples:
# the unknown guest's answer would lose "matched": null, a merge patch its removals. Routers
# register the examples that hold nulls, and keep_example_nulls() puts them back.
_EXAMPLES: list[tuple[str, str, dict[str, Any]]] = []


def examples_with_nulls(method: str, path: str, operation: dict[str, Any]) -> None:
    """Register the ``example``/``examples`` members of ``operation`` (a partial operation)."""
    _EXAMPLES.append((method.lower(), path, operation))


def _overlay(source: dict[str, Any], target: dict[str, Any]) -> None:
    for key, value in source.items():
        if key in ("example", "examples"):
            target[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _overlay(value, target[key])


def restore_example_nulls(spec: dict[str, Any]) -> dict[str, Any]:
    for method, path, operation in _EXAMPLES:
        target = spec.get("paths", {}).get(path, {}).get(method)
        if target is not None:
            _overlay(operation, target)
    return spec


# A schema that names consent purposes carries this member, saying where they go ("enum", or
# "propertyNames" for an object keyed by purpose); the app's document puts the deployment's
# purposes (ENRICH_CONSENT_PURPOSES) there, so it states exactly what the service accepts.
PURPOSES_MARK = "x-enrich-purposes"


def name_purposes(spec: dict[str, Any], purposes: list[str]) -> dict[str, Any]:
    """Replace every ``PURPOSES_MARK`` in ``spec`` (in place) with ``purposes``."""
    stack: list[Any] = [spec]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            where = item.pop(PURPOSES_MARK, None)
            if where == "enum":
                item["enum"] = list(purposes)
            elif where == "propertyNames":
                item["propertyNames"] = {"enum": list(purposes)}
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return spec


def keep_example_nulls(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the examples as written, nulls included (and the
    deployment's consent purposes where schemas name them)."""
    generate = app.openapi
    purposes = sorted(app.state.settings.consent_rules)

    def openapi() -> dict[str, Any]:
        return name_purposes(restore_example_nulls(generate()), purposes)

    app.openapi = openapi  # type: ignore[method-assign]
