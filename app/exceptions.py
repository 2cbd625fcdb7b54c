"""Domain errors and the handlers that render them as JSON."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.responses import JSONResponse


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


log = structlog.get_logger(__name__)

# What a database that is down, restarting or unreachable raises: SQLAlchemy's wrappers of
# driver errors, its pool timeout, and what asyncpg's connect raises as it is (refused, reset,
# timed out). They are answered 503 with Retry-After, like any other dependency outage.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)

# PostgreSQL error classes: 08 connection exception, 53 insufficient resources (too many
# connections), 57 operator intervention (shutting down, starting up, statement timeout).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")


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

    async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database.unavailable", error=type(exc).__name__)
        error = ServiceUnavailableError("the database cannot be reached now; retry shortly")
        return JSONResponse(
            error_body(error.code, error.message), status_code=503, headers=error.headers
        )

    async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
        # Any other driver error is a bug (500), unless the connection died under it or the
        # server says it cannot serve now (starting up, shutting down, too many connections).
        if isinstance(exc, sa_exc.DBAPIError) and (
            exc.connection_invalidated or _sqlstate(exc)[:2] in UNAVAILABLE_SQLSTATE_CLASSES
        ):
            return await _database_unavailable(request, exc)
        raise exc

    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, _database_unavailable)
    app.add_exception_handler(sa_exc.DBAPIError, _driver_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("invalid_json", "the request body is not valid JSON"), status_code=400
            )
        return JSONResponse(error_body("validation_error", _clean_errors(errors)), status_code=422)
