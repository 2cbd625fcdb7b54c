"""Domain errors and the handlers that render them as JSON."""

from __future__ import annotations

import sqlite3
from typing import Any, cast

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.responses import JSONResponse


class AppError(Exception):
    """Base error: rendered as ``{"error": code, "detail": message}`` with ``status_code``."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.headers = headers


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"


class ConflictError(AppError):
    status_code = 409
    code = "conflict"


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class InternalError(AppError):
    """A bug: the answer says so without details (they are in the log)."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str = "an unexpected error occurred; it has been logged") -> None:
        super().__init__(message)


class BodyTooLargeError(StarletteHTTPException):
    """Raised while reading a body past its limit; FastAPI lets HTTPExceptions through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")
        self.limit = limit


# -- database errors ------------------------------------------------------------------------
# Every database error gets its answer here, whichever driver raised it and whether or not
# SQLAlchemy wrapped it (the bulk store talks to asyncpg directly): see ``database_answer``.

# PostgreSQL error classes that mean "not now": 08 connection exception, 53 insufficient
# resources (too many connections), 57 operator intervention (shutting down, starting up,
# statement timeout, canceled).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
# Another transaction was in the way: lock_not_available (lock_timeout), serialization_failure,
# deadlock_detected. The same request a moment later succeeds.
BUSY_SQLSTATES = frozenset({"55P03", "40001", "40P01"})
# Integrity errors that are a concurrent writer's doing (the other checks are bugs):
# unique_violation and foreign_key_violation (a row removed while it was referenced).
CONFLICT_SQLSTATES = frozenset({"23505", "23503"})
# SQLite's names for the same two cases (sqlite3 errors carry ``sqlite_errorname``).
SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
SQLITE_CONFLICTS = frozenset(
    {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_FOREIGNKEY"}
)
# What a database that is down, restarting or unreachable raises apart from the above:
# SQLAlchemy's wrappers of connection failures (SQLite's are all OperationalError: locked,
# busy, disk I/O, cannot open), its pool timeout, asyncpg's closed-connection errors, and what
# a connect raises as it is (refused, reset, timed out).
UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sqlite3.OperationalError,
    OSError,
    TimeoutError,
)


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrappers, else ``exc`` itself."""
    inner: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        inner = exc.orig
    # SQLAlchemy's asyncpg adapter raises its own Error, caused by asyncpg's.
    cause = inner.__cause__
    if isinstance(cause, asyncpg.PostgresError | asyncpg.InterfaceError):
        return cast(BaseException, cause)  # asyncpg has no types: mypy sees Any
    return inner


def sqlstate(exc: BaseException) -> str:
    """The error's SQLSTATE (PostgreSQL) or result code name (SQLite), or ""."""
    driver = driver_error(exc)
    code = getattr(driver, "sqlstate", None) or getattr(driver, "pgcode", None)
    if code is None and isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorname", None)  # set on errors SQLite raised
    return str(code or "")


def database_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("the database cannot serve this now; retry shortly")


def database_answer(exc: BaseException) -> AppError | None:
    """The documented answer to a database error: 503 with Retry-After when the database cannot
    serve now, 409 when a concurrent write got in the way; None for anything else (a bug)."""
    code = sqlstate(exc)
    if code[:2] in UNAVAILABLE_SQLSTATE_CLASSES or code in BUSY_SQLSTATES:
        return database_unavailable()
    if code.startswith(SQLITE_BUSY):
        return database_unavailable()
    if code in CONFLICT_SQLSTATES or code in SQLITE_CONFLICTS:
        return ConflictError("a concurrent write changed the same data; retry it")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return database_unavailable()
    driver = driver_error(exc)
    if isinstance(driver, asyncpg.PostgresError):
        return None  # an error the server reported about this statement: a bug
    if isinstance(driver, asyncpg.InterfaceError) and not isinstance(driver, ValueError):
        return database_unavailable()  # a closed connection (a ValueError: bad arguments)
    if isinstance(exc, UNAVAILABLE_TYPES) or isinstance(driver, UNAVAILABLE_TYPES):
        return database_unavailable()
    return None


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    # Pydantic's error dicts may hold the raw input and exception objects; keep what is readable.
    cleaned = []
    for error in errors:
        item = {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg"),
            "type": error.get("type"),
        }
        cleaned.append(item)
    return cleaned


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, exc.detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("invalid_json", "the request body is not valid JSON"), status_code=400
            )
        return JSONResponse(error_body("validation_error", _clean_errors(errors)), status_code=422)
