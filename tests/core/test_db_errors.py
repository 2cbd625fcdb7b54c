"""Database errors as callers and operators meet them: the documented answer whichever driver
raised the error, and one structured log line that names the error's type, never its values.

These run ``enrich serve`` on the machine's PostgreSQL with JSON logs (the service's own logging
configuration) and read what it wrote.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import AppFactory, Backend, TokenMaker
from tests.fixtures.polling import eventually
from tests.fixtures.refusals import (  # noqa: F401  (fixture)
    EMAIL,
    NEVER_LOGGED,
    REFUSED_EVENT,
    REFUSED_SOURCE,
    TRAIT,
    refusing_triggers,
)
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import Service, bearer_headers

on_postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

PROFILE = f"/v1/profiles/email/{EMAIL}"
NDJSON = {"Content-Type": "application/x-ndjson"}


def dsn(backend: Backend) -> str:
    return backend.database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.usefixtures("refusing_triggers")
class TestRefusedWriteInProcess:
    async def test_a_json_500_and_one_line_that_names_the_type(
        self,
        backend: Backend,
        app_factory: AppFactory,
        token_for: TokenMaker,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        app = await app_factory(log_format="json")
        headers = {"Authorization": f"Bearer {await token_for()}"}
        capfd.readouterr()
        response = await put_profile(app.http, headers)
        assert response.status_code == 500, response.text
        assert response.json() == {
            "error": "internal_error",
            "detail": "an unexpected error occurred; it has been logged",
        }
        err = capfd.readouterr().err
        for value in NEVER_LOGGED:
            assert value not in err, err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        line = next(r for r in lines if r["event"] == "request.failed")
        assert line["request_id"] == response.headers["x-request-id"]
        assert (line["method"], line["route"]) == ("PUT", "/v1/profiles/{id_type}/{id_value}")
        expected = (
            ("RaiseError", "P0001")
            if backend.name == "postgres"
            else ("IntegrityError", "SQLITE_CONSTRAINT_TRIGGER")
        )
        assert (line["error"], line["sqlstate"]) == expected
        assert any(frame.startswith("app/profiles/") for frame in line["frames"])
        # The connection and the service go on.
        again = await app.http.get(PROFILE, headers=headers)
        assert again.status_code == 404


async def start(services: ServiceFactory, backend: Backend, **settings: str) -> Service:
    return await services.start(
        backend.database_url,
        backend.redis_url,
        redis_prefix=backend.redis_prefix,
        log_format="json",
        **settings,
    )


def log_records(service: Service) -> list[dict[str, Any]]:
    records = []
    for line in service.log_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


async def logged(service: Service, event: str, request_id: str) -> dict[str, Any]:
    """The ``event`` line of the request, once it is written."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [
            record
            for record in log_records(service)
            if record.get("event") == event and record.get("request_id") == request_id
        ]
        return bool(found)

    try:
        await eventually(written, f"a {event} line for {request_id}", interval=0.1)
    except AssertionError as missing:
        raise AssertionError(f"{missing}:\n{service.log_text()}") from None
    return found[0]


def assert_no_values(service: Service) -> None:
    text = service.log_text()
    for value in NEVER_LOGGED:
        assert value not in text, f"{value!r} was logged:\n{text}"


async def put_profile(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    document = {"traits": {"secret": TRAIT}, "source": REFUSED_SOURCE}
    return await http.put(PROFILE, json=document, headers=headers)


@on_postgres
@pytest.mark.usefixtures("refusing_triggers")
class TestRefusedWrites:
    async def test_a_write_the_database_refuses_is_a_json_500_logged_by_type_only(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        service = await start(services, backend)
        headers = await bearer_headers(service, backend.database_url)
        event = {
            "event_id": "evt-refused-1",
            "type": REFUSED_EVENT,
            "identifiers": {"email": EMAIL},
            "data": {"note": TRAIT},
        }
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
            answers = [
                (await put_profile(http, headers), "PUT", "/v1/profiles/{id_type}/{id_value}"),
                (await http.post("/v1/events", json=event, headers=headers), "POST", "/v1/events"),
            ]
        for response, method, route in answers:
            assert response.status_code == 500, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "internal_error"
            assert EMAIL not in response.text
            assert TRAIT not in response.text
            line = await logged(service, "request.failed", response.headers["x-request-id"])
            assert line["error"] == "RaiseError"  # the driver's type, not the message
            assert line["sqlstate"] == "P0001"
            assert (line["method"], line["route"], line["level"]) == (method, route, "error")
        assert_no_values(service)


@on_postgres
class TestTimedOutWrites:
    async def test_a_write_past_the_statement_timeout_is_503_with_retry_after(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        service = await start(services, backend, db_statement_timeout_ms="300")
        headers = await bearer_headers(service, backend.database_url)
        records = [{"identifiers": {"email": EMAIL}, "traits": {"secret": TRAIT}}]
        connection = await asyncpg.connect(dsn(backend), timeout=10)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE identifiers IN EXCLUSIVE MODE")
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
                    # Through SQLAlchemy (PUT), and straight through asyncpg (bulk).
                    put = await http.put(
                        PROFILE, json={"traits": {"secret": TRAIT}}, headers=headers
                    )
                    bulk = await http.post(
                        "/v1/profiles/bulk",
                        content=b"".join(orjson.dumps(r) + b"\n" for r in records),
                        headers={**headers, **NDJSON},
                    )
        finally:
            await connection.close()
        for response in (put, bulk):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"] == "service_unavailable"
            line = await logged(service, "database.unavailable", response.headers["x-request-id"])
            assert line["error"] == "QueryCanceledError"
            assert line["sqlstate"] == "57014"
        assert_no_values(service)


@on_postgres
class TestOverlappingBulks:
    async def test_concurrent_bulks_of_the_same_records_get_documented_answers(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        # A short statement timeout makes the bulks' waits on each other time out often.
        service = await start(services, backend, db_statement_timeout_ms="50")
        headers = {**await bearer_headers(service, backend.database_url), **NDJSON}
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as http:
            for round_ in range(3):
                records = [
                    {"identifiers": {"email": f"r{i}@example.com"}, "traits": {"round": round_}}
                    for i in range(2000)
                ]
                body = b"".join(orjson.dumps(r) + b"\n" for r in records)
                answers = await asyncio.gather(
                    *(http.post("/v1/profiles/bulk", content=body, headers=headers) for _ in "abcd")
                )
                for response in answers:
                    statuses.append(response.status_code)
                    assert response.status_code in (200, 503), response.text
                    if response.status_code == 503:
                        assert response.headers["retry-after"].isdigit()
                        assert response.json()["error"] == "service_unavailable"
        assert len(statuses) == 12
        assert_no_values(service)


# Logs an exception whose text holds a value through structlog and through a standard-library
# logger (as SQLAlchemy's pool and asyncio do), with the service's logging configuration.
LOG_EXCEPTIONS = f"""
import logging, structlog
from app.core.settings import Settings
from app.platform.logging import configure_logging
configure_logging(Settings(_env_file=None, log_format="json", log_level="INFO"))
try:
    raise ValueError("invalid input for query argument $1: {EMAIL!r}")
except ValueError:
    structlog.get_logger("t").exception("something.failed")
    logging.getLogger("sqlalchemy.pool").error("Exception during reset", exc_info=True)
"""


class TestExceptionsInAnyLogLine:
    def test_type_and_frames_but_never_the_text(self) -> None:
        result = subprocess.run(
            [sys.executable, "-c", LOG_EXCEPTIONS],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert EMAIL not in result.stderr
        structured, *plain = result.stderr.strip().splitlines()
        line = json.loads(structured)
        assert line["event"] == "something.failed"
        assert line["error"] == "ValueError"
        (frame,) = line["frames"]  # where it was raised: file, line, function
        assert frame.startswith("<string>:")
        assert frame.endswith(" <module>")
        assert plain == ["Exception during reset", f"ValueError at {frame}"]
