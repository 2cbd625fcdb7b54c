"""Personalize's X-Correlation-Id: the request id when no X-Request-ID came, echoed, and named
on the access line and in the audit, on the FastAPI stack and on the enrich fast path."""

from __future__ import annotations

import pytest

from app.audit.log import PROFILE_ERASED, AuditLog
from tests.conftest import AppFactory, ClientMaker, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, fetch_token, make_client_on
from tests.fixtures.spies import spy_fast_path
from tests.platform.test_logs import access_lines, flushed

CORRELATION = "c0ffee00-1234-4abc-9def-0123456789ab"


@pytest.fixture
async def json_app(app_factory: AppFactory) -> RunningApp:
    return await app_factory(log_level="INFO", log_format="json")


async def reader_headers(app: RunningApp, make_client: ClientMaker) -> dict[str, str]:
    client = await make_client("profiles:read profiles:write")
    return {"Authorization": f"Bearer {await fetch_token(app.http, client)}"}


class TestTheStack:
    async def test_a_correlation_id_alone_becomes_the_request_id_and_is_echoed(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str]
    ) -> None:
        response = await json_app.http.get("/healthz", headers={"X-Correlation-Id": CORRELATION})
        assert response.headers["x-request-id"] == CORRELATION
        assert response.headers["x-correlation-id"] == CORRELATION
        lines = access_lines((await flushed(json_app, capfd)).err)
        line = next(r for r in lines if r["correlation_id"] == CORRELATION)
        assert line["request_id"] == CORRELATION
        assert line["route"] == "/healthz"

    async def test_a_request_id_wins_and_both_are_on_the_line(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str]
    ) -> None:
        headers = {"X-Request-ID": "req-7", "X-Correlation-Id": CORRELATION}
        response = await json_app.http.get("/v1/profiles/email/x@example.com", headers=headers)
        assert response.status_code == 401
        assert response.headers["x-request-id"] == "req-7"
        assert response.headers["x-correlation-id"] == CORRELATION
        lines = access_lines((await flushed(json_app, capfd)).err)
        line = next(r for r in lines if r["request_id"] == "req-7")
        assert line["correlation_id"] == CORRELATION
        assert line["status"] == 401

    async def test_without_one_the_line_says_null_and_nothing_is_echoed(
        self, json_app: RunningApp, capfd: pytest.CaptureFixture[str]
    ) -> None:
        response = await json_app.http.get("/healthz", headers={"X-Request-ID": "plain-1"})
        assert "x-correlation-id" not in response.headers
        lines = access_lines((await flushed(json_app, capfd)).err)
        assert next(r for r in lines if r["request_id"] == "plain-1")["correlation_id"] is None

    @pytest.mark.parametrize("given", ["bad\x07id", "x" * 129])
    async def test_an_unusable_or_long_one_is_dropped_or_cut(
        self, json_app: RunningApp, given: str
    ) -> None:
        response = await json_app.http.get("/healthz", headers={"X-Correlation-Id": given})
        if given.isprintable():
            assert response.headers["x-correlation-id"] == given[:128]
            assert response.headers["x-request-id"] == given[:128]
        else:
            assert "x-correlation-id" not in response.headers
            assert len(response.headers["x-request-id"]) == 32

    async def test_an_erasure_is_audited_with_both_ids(
        self, json_app: RunningApp, make_client: ClientMaker
    ) -> None:
        headers = await reader_headers(json_app, make_client)
        profile = {"identifiers": {"email": "gone@example.com"}, "traits": {"tier": "x"}}
        path = "/v1/profiles/email/gone@example.com"
        assert (await json_app.http.put(path, json=profile, headers=headers)).status_code == 201
        erased = await json_app.http.delete(
            path, headers={**headers, "X-Correlation-Id": CORRELATION}
        )
        assert erased.status_code == 204
        async with json_app.runtime.sessionmaker() as session:
            events = await AuditLog(session).list()
        erasure = next(e for e in events if e.action == PROFILE_ERASED)
        assert erasure.details["correlation_id"] == CORRELATION
        assert erasure.details["request_id"] == erased.headers["x-request-id"] == CORRELATION


class TestTheFastPath:
    async def test_the_fast_path_does_the_same(
        self,
        json_app: RunningApp,
        make_client: ClientMaker,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        headers = await reader_headers(json_app, make_client)
        await json_app.http.post(ENRICH, json=GUEST, headers=headers)  # the token is known now
        served = spy_fast_path(json_app)
        alone = await json_app.http.post(
            ENRICH, json=GUEST, headers={**headers, "X-Correlation-Id": CORRELATION}
        )
        both = await json_app.http.post(
            ENRICH,
            json=GUEST,
            headers={**headers, "X-Request-ID": "req-8", "X-Correlation-Id": "corr-8"},
        )
        none = await json_app.http.post(ENRICH, json=GUEST, headers=headers)
        assert served[0] == 3
        assert alone.status_code == both.status_code == 200
        assert alone.headers["x-request-id"] == alone.headers["x-correlation-id"] == CORRELATION
        assert (both.headers["x-request-id"], both.headers["x-correlation-id"]) == (
            "req-8",
            "corr-8",
        )
        assert "x-correlation-id" not in none.headers
        lines = {r["request_id"]: r for r in access_lines((await flushed(json_app, capfd)).err)}
        assert lines[CORRELATION]["correlation_id"] == CORRELATION
        assert lines["req-8"]["correlation_id"] == "corr-8"
        assert lines[none.headers["x-request-id"]]["correlation_id"] is None
        assert lines["req-8"]["route"] == ENRICH

    async def test_a_refusal_on_the_fast_path_echoes_it_too(self, app_factory: AppFactory) -> None:
        app = await app_factory(rate_limit_rps=0.01, rate_limit_burst=1)
        client = await make_client_on(app, "profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(app.http, client)}"}
        await app.http.post(ENRICH, json=GUEST, headers=headers)
        refused = await app.http.post(
            ENRICH, json=GUEST, headers={**headers, "X-Correlation-Id": CORRELATION}
        )
        assert refused.status_code == 429
        assert refused.headers["x-correlation-id"] == CORRELATION
