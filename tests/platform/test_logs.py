"""Logs: one access line per request, and no secret, token or profile content in any line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from typing import Any, NamedTuple

import httpx
import pytest

from app.enrich.fields import FieldsError
from app.enrich.request import keys_and_selection
from app.platform.logging import exception_fields
from app.platform.metrics import request_metrics
from tests.conftest import AppFactory, ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, fetch_token
from tests.fixtures.polling import eventually


def access_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "http.request":
                lines.append(record)
    return lines


@pytest.fixture
async def json_app(app_factory: AppFactory) -> RunningApp:
    return await app_factory(log_level="DEBUG", log_format="json")


class Captured(NamedTuple):
    out: str
    err: str


async def flushed(app: RunningApp, capfd: pytest.CaptureFixture[str]) -> Captured:
    """What was written since the last read, once every access line so far is out.

    Access lines are written in batches, in order: once a last request's line is out, so are
    those of the requests before it.
    """
    marker = uuid.uuid4().hex
    await app.http.get("/healthz", headers={"X-Request-ID": marker})
    out: list[str] = []
    err: list[str] = []

    def written() -> bool:
        captured = capfd.readouterr()
        out.append(captured.out)
        err.append(captured.err)
        return any(r["request_id"] == marker for r in access_lines(captured.err))

    await eventually(written, "the access lines written")
    return Captured("".join(out), "".join(err))


async def token_then_quiet(
    app: RunningApp, client: OAuthClient, capfd: pytest.CaptureFixture[str]
) -> str:
    """A token for ``client``, with what getting it logged already written and discarded."""
    token = await fetch_token(app.http, client)
    await flushed(app, capfd)
    return token


class TestAccessLine:
    async def test_one_json_line_per_request_with_what_ops_needs(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str], make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await token_then_quiet(json_app, client, capfd)
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-from-caller-1"}
        sent = time.perf_counter()
        first = await json_app.http.post(ENRICH, json=GUEST, headers=headers)
        elapsed_ms = (time.perf_counter() - sent) * 1000
        second = await json_app.http.get(
            "/v1/profiles/email/nobody@example.com", headers={"Authorization": f"Bearer {token}"}
        )
        assert first.headers["x-request-id"] == "req-from-caller-1"
        written = await flushed(json_app, capfd)
        lines = {line["request_id"]: line for line in access_lines(written.err)}
        enrich = lines["req-from-caller-1"]
        profile = lines[second.headers["x-request-id"]]
        assert enrich["request_id"] == "req-from-caller-1"
        assert enrich["client_id"] == client.client_id
        assert enrich["route"] == ENRICH
        assert enrich["method"] == "POST"
        assert enrich["status"] == 200
        assert enrich["cache"] == "miss"
        assert 0 < enrich["duration_ms"] <= elapsed_ms  # (the server's part of what we waited)
        assert enrich["level"] == "info"
        assert enrich["timestamp"].endswith("Z")
        assert profile["route"] == "/v1/profiles/{id_type}/{id_value}"
        assert profile["status"] == 404
        assert profile["request_id"] == second.headers["x-request-id"]
        assert len(profile["request_id"]) == 32

    async def test_request_ids_with_json_characters_keep_every_line_valid(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str], make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await token_then_quiet(json_app, client, capfd)
        given = ['say "hi"', "back\\slash", "caf\u00e9-\u00ff", "{}[],:"]
        sent = time.perf_counter()
        for request_id in given:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
            response = await json_app.http.post(
                ENRICH, json=GUEST, headers={k: v.encode("latin-1") for k, v in headers.items()}
            )
            assert response.status_code == 200
        elapsed_ms = (time.perf_counter() - sent) * 1000
        lines = access_lines((await flushed(json_app, capfd)).err)  # each one parses as JSON
        assert [line["request_id"] for line in lines if line["route"] == ENRICH] == given
        assert all(0 < line["duration_ms"] <= elapsed_ms for line in lines)
        assert all(line["status"] == 200 for line in lines)

    async def test_an_unprintable_request_id_is_replaced(self, json_app: RunningApp) -> None:
        response = await json_app.http.get("/healthz", headers={"X-Request-ID": "bad\x07id"})
        assert response.headers["x-request-id"] != "bad\x07id"
        assert len(response.headers["x-request-id"]) == 32

    async def test_a_refused_request_names_no_client(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str]
    ) -> None:
        capfd.readouterr()
        response = await json_app.http.post(ENRICH, json=GUEST)
        assert response.status_code == 401
        written = await flushed(json_app, capfd)
        # Lines of earlier requests may still be on their way out: pick this request's.
        line = next(r for r in access_lines(written.err) if r.get("route") == ENRICH)
        assert line["status"] == 401
        assert line["client_id"] is None

    async def test_development_logs_are_readable_text(
        self, app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
    ) -> None:
        app = await app_factory(log_level="INFO", log_format="console")
        capfd.readouterr()
        await app.http.get("/healthz")
        err = capfd.readouterr().err
        line = next(line for line in err.splitlines() if "http.request" in line)
        assert not line.startswith("{")
        assert "route=/healthz" in line
        assert "status=200" in line

    async def test_switched_off_there_is_no_access_line(
        self, app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
    ) -> None:
        app = await app_factory(log_level="INFO", log_format="json", access_log=False)
        capfd.readouterr()
        await app.http.get("/healthz")
        await app.http.get("/healthz")
        request_metrics.flush()  # what a scrape does: the requests' batch is drained now
        assert access_lines(capfd.readouterr().err) == []


class TestNothingSecretIsLogged:
    async def test_a_full_token_enrich_write_erase_cycle(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str], make_client: ClientMaker
    ) -> None:
        http: httpx.AsyncClient = json_app.http
        capfd.readouterr()
        secret = "s3cr3t-" + "k" * 40
        client = await make_client("profiles:read profiles:write events:write", secret=secret)
        wrong = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, "wrong-secret-should-not-appear-91"),
        )
        assert wrong.status_code == 401
        posted = await http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": secret,
            },
        )
        assert posted.status_code == 200
        token = await fetch_token(http, client)
        auth = {"Authorization": f"Bearer {token}"}
        email = "Jane.Leaky@Example.com"
        document = {
            "identifiers": {"email": email, "phone": "+1 202 555 0143", "crm_id": "CRM-LEAK-7731"},
            "traits": {"tier": "platinum-leak-4411", "nickname": "Zebulon Leakwood"},
            "segments": ["segment-leak-5150"],
            "metrics": {"score_leak": 987654.321},
            "recommendations": [{"sku": "SKU-LEAK-2468"}],
        }
        put = await http.put("/v1/profiles/email/" + email, json=document, headers=auth)
        assert put.status_code == 201, put.text
        for _ in range(2):  # a miss, then an L1 hit (the fast path)
            answer = await http.post(
                ENRICH, json={"identifiers": {"email": email.lower()}}, headers=auth
            )
            assert answer.json()["traits"]["tier"] == "platinum-leak-4411"
        by_get = await http.get(ENRICH, params={"crm_id": "CRM-LEAK-7731"}, headers=auth)
        assert by_get.json()["found"] is True
        event = {
            "event_id": "evt-leak-0001",
            "type": "purchase",
            "identifiers": {"phone": "+12025550143"},
            "data": {"amount": "123.45", "currency": "EUR", "note": "gift-leak-1357"},
        }
        assert (await http.post("/v1/events", json=event, headers=auth)).status_code == 202
        patch = await http.patch(
            "/v1/profiles/crm_id/CRM-LEAK-7731",
            content=json.dumps({"traits": {"nickname": "Zeb Leakwood II"}}),
            headers={**auth, "Content-Type": "application/merge-patch+json"},
        )
        assert patch.status_code == 200
        erased = await http.delete("/v1/profiles/email/" + email, headers=auth)
        assert erased.status_code == 204
        revoked = await http.post(
            "/oauth/revoke", data={"token": token}, auth=(client.client_id, secret)
        )
        assert revoked.status_code == 200
        written = await flushed(json_app, capfd)
        logs = written.out + written.err
        assert len(access_lines(logs)) >= 12  # the test saw the logs it means to check
        forbidden = [
            secret,
            "wrong-secret-should-not-appear-91",
            token,
            token.split(".")[1],  # the claims part alone
            email,
            email.lower(),
            "202 555 0143",
            "2025550143",
            "CRM-LEAK-7731",
            "platinum-leak-4411",
            "Zebulon Leakwood",
            "Zeb Leakwood",
            "segment-leak-5150",
            "987654.321",
            "SKU-LEAK-2468",
            "gift-leak-1357",
            "123.45",
        ]
        leaked = [value for value in forbidden if value in logs]
        assert leaked == []


# A standard-library logger (SQLAlchemy's pool, asyncio) with the service's configuration: a
# driver error with a SQLSTATE, an error raised in a library called by the service (a database
# URL it cannot read, with a password), and exc_info=True where nothing was raised.
STDLIB_LINES = """
import logging
from app.core.db import create_engine
from app.core.settings import Settings
from app.platform.logging import configure_logging
configure_logging(Settings(_env_file=None, log_format="json", log_level="INFO"))
class UniqueViolationError(Exception):
    sqlstate = "23505"
try:
    raise UniqueViolationError("Key (email)=(jane@example.com) already exists")
except UniqueViolationError:
    logging.getLogger("sqlalchemy.pool").error("Exception during reset", exc_info=True)
try:
    create_engine(Settings(_env_file=None, database_url="postgresql://u:s3cret@db:port/x"))
except ValueError:
    logging.getLogger("sqlalchemy.pool").error("Exception during connect", exc_info=True)
logging.getLogger("asyncio").error("Nothing was raised", exc_info=True)
"""


def test_standard_library_lines_name_the_sqlstate_and_add_nothing_without_an_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", STDLIB_LINES], capture_output=True, text=True, timeout=60, check=True
    )
    assert "jane@example.com" not in result.stderr
    assert "s3cret" not in result.stderr
    reset, raised, connect, from_library, nothing = result.stderr.splitlines()
    assert [reset, raised, connect, nothing] == [
        "Exception during reset",
        "UniqueViolationError sqlstate=23505 at <string>:10 <module>",
        "Exception during connect",
        "Nothing was raised",
    ]
    # Where it was raised, then the service's own frames outwards.
    frames = (
        r"ValueError at \S*sqlalchemy/engine/url\.py:\d+ \w+ <- app/core/db\.py:\d+ create_engine"
    )
    assert re.fullmatch(frames, from_library), from_library


def test_a_library_frame_is_named_from_its_package_not_its_install_path() -> None:
    installed = "/opt/service/lib/python3.11/site-packages/somelib/parse.py"
    try:
        exec(compile("raise ValueError('jane@example.com')", installed, "exec"))
    except ValueError as exc:
        fields = exception_fields(exc)
    assert fields == {"error": "ValueError", "frames": ["somelib/parse.py:1 <module>"]}


def test_the_service_frames_an_error_passed_through_are_named_outermost_first() -> None:
    try:
        keys_and_selection({"email": "jane@example.com"}, "colour", "US")
    except FieldsError as exc:
        fields = exception_fields(exc)
    where = [(frame.split(":")[0], frame.split(" ")[-1]) for frame in fields["frames"]]
    assert where == [
        ("app/enrich/request.py", "keys_and_selection"),
        ("app/enrich/fields.py", "parse_fields"),
    ]


# Logging configured while stderr was a stream that is closed later (a test's capsys), then
# used once stderr is the real one again.
STDERR_SWAPPED = """
import io, logging, sys
import structlog
from app.core.settings import Settings
from app.platform.logging import configure_logging
real, sys.stderr = sys.stderr, io.StringIO()
configure_logging(Settings(_env_file=None, log_format="json", log_level="INFO"))
sys.stderr.close()
sys.stderr = real
structlog.get_logger("test").warning("cache.redis_failed", error="TimeoutError")
logging.getLogger("test").warning("from the standard library")
"""


def test_logs_follow_stderr_when_the_stream_they_were_configured_with_is_gone() -> None:
    """An app built while a test captured stderr kept writing to that capture after it was
    closed, and a later test's warning failed with "I/O operation on closed file"."""
    done = subprocess.run(
        [sys.executable, "-c", STDERR_SWAPPED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '"event":"cache.redis_failed"' in done.stderr
    assert "from the standard library" in done.stderr
