"""POST /v1/experiences/call against a local callFlows stand-in, through real sockets."""

from __future__ import annotations

import asyncio
import copy
import socket
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from tests.conftest import AppFactory, TokenMaker
from tests.experiences.standin import CallFlowsStandIn
from tests.fixtures.callers import sample
from tests.fixtures.polling import HANG_GUARD_SECONDS

CALL: dict[str, Any] = {
    "identifiers": {"email": "jane@example.com"},
    "fields": ["traits.tier", "segments"],
    "personalize": {
        "clientKey": "abBah8aelipaPeebae7roox2tiexoSee",
        "channel": "WEB",
        "language": "en",
        "currencyCode": "EUR",
        "pointOfSale": "myretailsite/ireland",
        "email": "jane@example.com",
        "friendlyId": "home_page_banner",
        "params": {"page": "/running/shoes"},
    },
}
JANE = {
    "traits": {"tier": "gold", "first_name": "Jane"},
    "segments": ["runners", "vip"],
    "metrics": {"order_count": 3},
    "recommendations": [{"sku": "SKU-1", "score": 0.9}],
}


def call(**changes: Any) -> dict[str, Any]:
    """The example call, with members of ``personalize`` changed (None: removed)."""
    body = copy.deepcopy(CALL)
    for name, value in changes.items():
        if value is None:
            body["personalize"].pop(name, None)
        else:
            body["personalize"][name] = value
    return body


async def store_jane(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
    assert response.status_code in (200, 201), response.text


async def relay(
    http: httpx.AsyncClient, headers: dict[str, str], body: Any = None
) -> httpx.Response:
    async with asyncio.timeout(HANG_GUARD_SECONDS):  # a hang guard, not a timing check
        return await http.post(
            "/v1/experiences/call", json=CALL if body is None else body, headers=headers
        )


class TestRelay:
    async def test_known_guest_fields_go_in_params_and_the_answer_comes_back_unchanged(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        await store_jane(http, headers)
        before = sample("enrich_experience_calls_total", outcome="answered")
        response = await relay(http, headers)
        assert response.status_code == 200, response.text
        assert sample("enrich_experience_calls_total", outcome="answered") == before + 1
        assert response.headers["content-type"] == "application/json"
        assert "x-experience-fallback" not in response.headers
        assert response.json() == {
            "experience": "home_page_banner",
            "offer": "gold-banner",
            "known": True,
        }
        [sent] = standin.received
        assert sent["params"]["page"] == "/running/shoes"
        guest = sent["params"]["enrich"]
        assert guest["found"] is True
        assert guest["matched"] == "email"
        assert guest["traits"] == {"tier": "gold"}
        assert guest["segments"] == ["runners", "vip"]
        assert guest["metrics"] == {}
        # The callFlows attributes go on as the caller sent them.
        assert {k: v for k, v in sent.items() if k != "params"} == {
            k: v for k, v in CALL["personalize"].items() if k != "params"
        }

    async def test_without_fields_the_default_set_is_sent(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        await store_jane(http, headers)
        body = call(browserId="a38b230c-11eb-4cf9-8d5d-274e9f344925", email=None, params=None)
        del body["fields"]
        response = await relay(http, headers, body)
        assert response.status_code == 200, response.text
        guest = standin.received[0]["params"]["enrich"]
        assert guest["traits"] == JANE["traits"]
        assert guest["metrics"] == {"order_count": 3}
        assert guest["recommendations"] == []  # not in ENRICH_EXPERIENCE_FIELDS by default

    async def test_an_integer_past_64_bits_goes_on_as_a_number(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        # As a profile write stores it: JSON has one number type, and no JSON writer sends an
        # integer that large, so it goes on as the float nearest to it.
        response = await relay(http, headers, call(params={"n": 10**30, "m": [-(2**64)]}))
        assert response.status_code == 200, response.text
        sent = standin.received[0]["params"]
        assert sent["n"] == 1e30
        assert sent["m"] == [-float(2**64)]

    async def test_unknown_guest_is_sent_as_not_found(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        body = call(identifiers={"provider": "BXLP", "id": "123456"}, email=None)
        body["identifiers"] = {"email": "nobody@example.com"}
        response = await relay(http, headers, body)
        assert response.status_code == 200, response.text
        assert response.json()["offer"] == "default"
        assert response.json()["known"] is False
        guest = standin.received[0]["params"]["enrich"]
        assert guest["found"] is False
        assert guest["matched"] is None
        assert guest["traits"] == {}
        assert standin.received[0]["identifiers"] == {"provider": "BXLP", "id": "123456"}

    async def test_calls_share_the_process_connection_pool(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        for _ in range(3):
            assert (await relay(http, headers)).status_code == 200
        assert len(standin.received) == 3
        assert standin.connections == 1  # one kept-alive connection, not one per call

    async def test_personalize_refusal_is_passed_on(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await relay(http, headers, call(friendlyId="no_such_experience"))
        assert response.status_code == 404
        assert response.json()["message"] == "no live experience with this friendlyId"
        assert "x-experience-fallback" not in response.headers


class TestFallback:
    async def test_slow_personalize_gets_the_fallback_after_the_deadline(
        self,
        app_factory: AppFactory,
        token_for: TokenMaker,
        standin: CallFlowsStandIn,
    ) -> None:
        app = await app_factory(personalize_api_url=standin.url, personalize_timeout_ms=100)
        headers = {"Authorization": f"Bearer {await token_for('profiles:read')}"}
        standin.mode = "slow"
        before = sample("enrich_experience_calls_total", outcome="timeout")
        response = await relay(app.http, headers)
        assert response.status_code == 200
        assert response.json() == {"fallback": True, "reason": "timeout"}
        assert response.headers["x-experience-fallback"] == "timeout"
        # (Whether the stand-in had read the request before the deadline depends on the
        # machine's load, so it is not asserted: the caller sees the same either way.)
        assert sample("enrich_experience_calls_total", outcome="timeout") == before + 1

    @pytest.mark.parametrize(
        ("mode", "reason"), [("error", "upstream_error"), ("not_json", "invalid_answer")]
    )
    async def test_a_useless_answer_gets_the_fallback(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        standin: CallFlowsStandIn,
        mode: str,
        reason: str,
    ) -> None:
        await store_jane(http, headers)
        standin.mode = mode
        before = sample("enrich_experience_calls_total", outcome=reason)
        with capture_logs() as logs:
            response = await relay(http, headers)
        assert response.status_code == 200
        assert response.json() == {"fallback": True, "reason": reason}
        assert response.headers["x-experience-fallback"] == reason
        assert sample("enrich_experience_calls_total", outcome=reason) == before + 1
        # The warning names the tenant by the key's first characters, and never the guest.
        [fallback] = [line for line in logs if line["event"] == "experiences.fallback"]
        assert fallback["reason"] == reason
        assert fallback["client_key"] == "abBa..."
        logged = repr(logs)
        assert CALL["personalize"]["clientKey"] not in logged
        assert "gold" not in logged
        assert "jane@example.com" not in logged

    async def test_unreachable_personalize_gets_the_fallback(
        self, app_factory: AppFactory, token_for: TokenMaker
    ) -> None:
        with socket.socket() as spare:  # a port nobody listens on
            spare.bind(("127.0.0.1", 0))
            port = spare.getsockname()[1]
        app = await app_factory(personalize_api_url=f"http://127.0.0.1:{port}")
        headers = {"Authorization": f"Bearer {await token_for('profiles:read')}"}
        response = await relay(app.http, headers)
        assert response.status_code == 200
        assert response.headers["x-experience-fallback"] == "unreachable"

    async def test_without_a_personalize_url_every_call_gets_the_fallback(
        self, app_factory: AppFactory, token_for: TokenMaker
    ) -> None:
        app = await app_factory()
        headers = {"Authorization": f"Bearer {await token_for('profiles:read')}"}
        before = sample("enrich_experience_calls_total", outcome="not_configured")
        response = await relay(app.http, headers)
        assert response.status_code == 200
        assert response.json() == {"fallback": True, "reason": "not_configured"}
        assert response.headers["x-experience-fallback"] == "not_configured"
        assert sample("enrich_experience_calls_total", outcome="not_configured") == before + 1


class TestRefusals:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(call(clientKey=None), id="no clientKey"),
            pytest.param(call(friendlyId=None), id="no friendlyId"),
            pytest.param(call(currencyCode=None), id="no currencyCode"),
            pytest.param(call(email=None), id="no guest id"),
            pytest.param(call(browserId="b-1"), id="email and browserId"),
            pytest.param(
                {**call(), "personalize": {**call()["personalize"], "browserId": None}},
                id="null browserId",
            ),
            pytest.param(call(identifiers={"provider": "BXLP"}), id="identifiers without id"),
            pytest.param(call(email="jane\u0085@example.com"), id="email with U+0085"),
            pytest.param(call(params={"n": 10**400}), id="an integer past a float's range"),
            pytest.param(call(email="jane@example\u3000.com"), id="email with U+3000"),
            pytest.param(call(channel="web"), id="lower-case channel"),
            pytest.param(call(currencyCode="euro"), id="currency not ISO 4217"),
            pytest.param(call(params=["a"]), id="params not an object"),
            pytest.param(call(params={"enrich": 1}), id="params.enrich taken"),
            pytest.param(call(geo="x"), id="unknown callFlows member"),
            pytest.param({**CALL, "identifier": {}}, id="unknown member"),
            pytest.param({k: v for k, v in CALL.items() if k != "personalize"}, id="no request"),
            pytest.param({**CALL, "fields": ["traits.tier", "colour"]}, id="unknown field"),
        ],
    )
    async def test_bad_call_is_422_and_personalize_is_not_asked(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        standin: CallFlowsStandIn,
        body: dict[str, Any],
    ) -> None:
        response = await relay(http, headers, body)
        assert response.status_code == 422, response.text
        assert set(response.json()) == {"error", "detail"}
        assert standin.received == []
        assert standin.refused == []

    async def test_a_lone_surrogate_is_422_not_a_500(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        """Python's JSON reader takes ``"\\ud800"``; no JSON writer can send it on."""
        body = orjson.dumps(call()).replace(b'"myretailsite/ireland"', b'"\\ud800"')
        response = await http.post(
            "/v1/experiences/call",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert standin.received == []

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b'{"identifiers": ', id="malformed JSON"),
            pytest.param(orjson.dumps({**CALL, "identifiers": {"Bad-Type": "x"}}), id="bad type"),
        ],
    )
    async def test_malformed_request_is_400(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        standin: CallFlowsStandIn,
        content: bytes,
    ) -> None:
        response = await http.post(
            "/v1/experiences/call",
            content=content,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert standin.received == []

    async def test_without_profiles_read_is_403(
        self, http: httpx.AsyncClient, token_for: TokenMaker, standin: CallFlowsStandIn
    ) -> None:
        token = await token_for("events:write")
        response = await relay(http, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 403
        assert "insufficient_scope" in response.headers["www-authenticate"]
        assert standin.received == []


class TestParamsLimit:
    async def test_own_params_over_the_limit_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str], standin: CallFlowsStandIn
    ) -> None:
        response = await relay(http, headers, call(params={"note": "x" * 3700}))
        assert response.status_code == 422
        assert response.json()["error"] == "params_too_large"
        assert standin.received == []

    async def test_guest_fields_are_cut_to_fit(
        self,
        app_factory: AppFactory,
        token_for: TokenMaker,
        standin: CallFlowsStandIn,
    ) -> None:
        app = await app_factory(personalize_api_url=standin.url, experience_params_max_chars=1000)
        headers = {"Authorization": f"Bearer {await token_for('profiles:read profiles:write')}"}
        many = {**JANE, "segments": [f"segment-{n:03}" for n in range(200)]}
        put = await app.http.put("/v1/profiles/email/jane@example.com", json=many, headers=headers)
        assert put.status_code == 201, put.text
        response = await relay(app.http, headers, call(params={"note": "x" * 500}))
        assert response.status_code == 200, response.text
        params = standin.received[0]["params"]
        assert len(orjson.dumps(params).decode()) <= 1000
        assert params["note"] == "x" * 500
        guest = params["enrich"]
        assert guest["truncated"] is True
        assert guest["traits"] == {"tier": "gold"}
        assert 0 < len(guest["segments"]) < 200
        assert guest["segments"] == many["segments"][: len(guest["segments"])]
