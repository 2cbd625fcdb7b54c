"""Structured logs: JSON in production, readable in development; a request id on each line.

Nothing here ever writes a secret, a token or profile content: callers log identifiers of
profiles through ``short_hash`` only. The access line (one per request) skips structlog's
processor chain in JSON mode: it is rendered with orjson straight to stderr, in the same shape
as every other JSON line, because it runs on the hot path.
"""

from __future__ import annotations

import hashlib
import logging
import select
import sys
import time
import traceback
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict

from app.core.errors import driver_error, sqlstate
from app.core.fdio import write_all
from app.core.settings import Settings
from app.platform.metrics import AccessRecord, count_redis_errors

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
# The caller's X-Correlation-Id (Sitecore Personalize sends one with every connection request).
correlation_id_var: ContextVar[str] = ContextVar("correlation_id", default="")

ACCESS_EVENT = "http.request"
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
# The longest an access line waits to be written.
FLUSH_SECONDS = 0.05
_LEVELS = {"critical": 50, "exception": 40, "error": 40, "warn": 30, "warning": 30, "info": 20}


def short_hash(value: str) -> str:
    """A short, stable stand-in for an identifier in logs and the audit log."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


# -- exceptions in logs -----------------------------------------------------------------------
# An exception's message is never logged, at any level: a database error's text holds the
# statement's values (an email, a trait), asyncpg's argument errors quote the value itself, and
# validation errors quote the input. A line says what failed by type, SQLSTATE and the frames it
# was raised through (file, line, function: code, not data).

_APP_DIR = Path(__file__).resolve().parent.parent  # app/
_ROOT = str(_APP_DIR.parent) + "/"
# Frames named on a line: the service's own, then the innermost (where it was raised).
FRAMES_MAX = 12


def _frame_name(filename: str, line: int, function: str) -> str:
    if filename.startswith(_ROOT):
        filename = filename[len(_ROOT) :]
    else:
        filename = filename.rpartition("site-packages/")[2]
    return f"{filename}:{line} {function}"


def _frames(exc: BaseException) -> list[str]:
    walked = [
        (f.f_code.co_filename, line, f.f_code.co_name)
        for f, line in traceback.walk_tb(exc.__traceback__)
    ]
    if not walked:
        return []
    ours = [frame for frame in walked[:-1] if frame[0].startswith(str(_APP_DIR))]
    chosen = [*ours[-(FRAMES_MAX - 1) :], walked[-1]]
    return [_frame_name(*frame) for frame in chosen]


def exception_fields(exc: BaseException) -> dict[str, Any]:
    """What a log line says about ``exc``: the type of the error (the driver's own behind
    SQLAlchemy's wrappers), its SQLSTATE if any, and where it was raised; never its text."""
    fields: dict[str, Any] = {"error": type(driver_error(exc)).__name__}
    code = sqlstate(exc)
    if code:
        fields["sqlstate"] = code
    fields["frames"] = _frames(exc)
    return fields


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 else None
    return sys.exc_info()[1] if exc_info else None


def _exception_without_text(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """structlog's ``format_exc_info`` without the message: ``log.exception(...)`` anywhere
    gives the exception's type, SQLSTATE and frames."""
    exc = _exception_of(event.pop("exc_info", None))
    if exc is not None:
        for name, value in exception_fields(exc).items():
            event.setdefault(name, value)
    return event


class _NoTextFormatter(logging.Formatter):
    """Standard-library records (SQLAlchemy's pool, asyncio, uvicorn) with an exception get
    its type, SQLSTATE and frames, not its text."""

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        exc = ei[1]
        if exc is None:
            return ""
        fields = exception_fields(exc)
        code = f" sqlstate={fields['sqlstate']}" if "sqlstate" in fields else ""
        return f"{fields['error']}{code} at " + " <- ".join(reversed(fields["frames"]))


def _add_request_id(_logger: Any, _name: str, event: EventDict) -> EventDict:
    request_id = request_id_var.get()
    if request_id:
        event.setdefault("request_id", request_id)
    correlation_id = correlation_id_var.get()
    if correlation_id:
        event.setdefault("correlation_id", correlation_id)
    return event


def _orjson_text(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class _DropBelow:
    """Drop events under the configured level (after they have been counted)."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __call__(self, _logger: Any, name: str, event: EventDict) -> EventDict:
        if _LEVELS.get(name, 10) < self.level:
            raise structlog.DropEvent
        return event


class AccessLog:
    """The one line per request: request id, the caller's correlation id (null when none came),
    client, route, status, duration, cache level.

    Lines are written in batches (``write_all``, see ``app.platform.middleware.Access``): a
    batch costs one ``write`` per ``PIPE_BUF`` bytes instead of one per line. A write of at most
    ``PIPE_BUF`` bytes that ends on a line is kept whole by the kernel, so the lines of several
    workers sharing one pipe never mix.
    """

    def __init__(self, *, json: bool) -> None:
        self.json = json
        self._millisecond = -1
        self._stamp = b""
        self._console = structlog.get_logger("app.access")
        # The fixed part of a line per (client, method, route, status, cache, address): a
        # busy worker answers the same few combinations all day, so a line is made by
        # filling in the request id, the duration and the time.
        self._middles: dict[tuple[Any, ...], bytes] = {}

    def _timestamp(self, wall: float) -> bytes:
        """ISO 8601 in UTC to the millisecond, made once per millisecond (a busy worker ends
        dozens of requests in one)."""
        millisecond = int(wall * 1000)
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            second, fraction = divmod(millisecond, 1000)
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = f"{prefix}.{fraction:03d}Z".encode()
        return self._stamp

    def _write_readable(self, records: list[AccessRecord]) -> None:
        """Development lines, through structlog's console renderer."""
        for record in records:
            _, seconds, request_id, client_id, method, route, status, cache, address, cid, why = (
                record
            )
            extra = {"consent": why} if why is not None else {}
            self._console.info(
                ACCESS_EVENT,
                **extra,
                request_id=request_id,
                correlation_id=cid,
                client_id=client_id,
                method=method,
                route=route,
                status=status,
                duration_ms=int(seconds * 1_000_000) / 1000,
                cache=cache,
                client_addr=address,
            )

    def write_all(self, records: list[AccessRecord]) -> None:
        if not self.json:
            self._write_readable(records)
            return
        to_wall = time.time() - time.perf_counter()
        middles = self._middles
        dumps = orjson.dumps
        lines: list[bytes] = []
        size = 0
        for (
            ended,
            seconds,
            request_id,
            client_id,
            method,
            route,
            status,
            cache,
            address,
            correlation_id,
            consent,
        ) in records:
            key = (client_id, method, route, status, cache, address, consent)
            middle = middles.get(key)
            if middle is None:
                if len(middles) >= ACCESS_TEMPLATES_MAX:
                    middles.clear()
                middle = middles[key] = _access_middle(*key)
            line = b'%s%s,"correlation_id":%s%s%.3f,"timestamp":"%s"}\n' % (
                _ACCESS_HEAD,
                dumps(request_id),
                dumps(correlation_id),
                middle,
                seconds * 1000,
                self._timestamp(ended + to_wall),
            )
            if size + len(line) > PIPE_BUF:
                _write(lines)
                lines, size = [], 0
            lines.append(line)
            size += len(line)
        _write(lines)


def _write(lines: list[bytes]) -> None:
    """Write whole lines (at most PIPE_BUF bytes) to stderr in one write."""
    if not lines:
        return
    data = b"".join(lines)
    stream = sys.stderr
    stream.flush()  # what structlog wrote before these lines goes first
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
        stream.write(data.decode())
        stream.flush()
        return
    write_all(descriptor, data)


_ACCESS_HEAD = b'{"event":%s,"request_id":' % orjson.dumps(ACCESS_EVENT)
# Distinct fixed parts of access lines remembered (cleared when full).
ACCESS_TEMPLATES_MAX = 1000


def _access_middle(
    client_id: str | None,
    method: str,
    route: str,
    status: int,
    cache: str | None,
    address: str | None,
    consent: str | None = None,
) -> bytes:
    """The part of an access line between the request id and the duration, as JSON.

    ``consent``: why an enrich answer carried no personal data (``denied:marketing``,
    ``not_granted:marketing``); the member is there only then."""
    members: dict[str, Any] = {
        "client_id": client_id,
        "method": method,
        "route": route,
        "status": status,
        "cache": cache,
        "client_addr": address,
    }
    if consent is not None:
        members["consent"] = consent
    members["level"] = "info"
    fields = orjson.dumps(members)
    return b"," + fields[1:-1] + b',"duration_ms":'


def json_logs(settings: Settings) -> bool:
    return settings.log_format == "json" or (
        settings.log_format == "auto" and settings.environment == "production"
    )


def log_level(settings: Settings) -> int:
    level = logging.getLevelName(settings.log_level.upper())
    return level if isinstance(level, int) else logging.INFO


def access_log_for(settings: Settings) -> AccessLog | None:
    """The access log, or None when it is switched off (or INFO lines are not logged)."""
    if not settings.access_log or log_level(settings) > logging.INFO:
        return None
    return AccessLog(json=json_logs(settings))


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a
    stream replaced since (a test's capture, closed after it) must not take the logs with it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = _Stderr()


def configure_logging(settings: Settings) -> None:
    as_json = json_logs(settings)
    level = log_level(settings)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [count_redis_errors]
    if level > logging.WARNING:
        processors.append(_DropBelow(level))
    structlog.configure(
        processors=[
            *processors,
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exception_without_text,
            renderer,
        ],
        # Warnings always reach the processors, so Redis failures are counted at any level.
        wrapper_class=structlog.make_filtering_bound_logger(min(level, logging.WARNING)),
        logger_factory=structlog.PrintLoggerFactory(file=STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(STDERR)
    handler.setFormatter(_NoTextFormatter("%(message)s"))
    logging.basicConfig(level=max(level, logging.WARNING), handlers=[handler])
