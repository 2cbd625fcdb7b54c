from __future__ import annotations

import httpx
import orjson
import pytest

JSON = {"content-type": "application/json"}
PUT = ("PUT", "/v1/profiles/crm_id/C-1")
PATCH = ("PATCH", "/v1/profiles/crm_id/C-1")
ENRICH = ("POST", "/v1/enrich")
EVENTS = ("POST", "/v1/events")
BULK = ("POST", "/v1/profiles/bulk")
EVENT = b'{"event_id": "e-1", "type": "view", "identifiers": {"crm_id": "C-1"}'


class TestBadInput:
    """Every bad request is a 4xx JSON error that names the problem, never a 5xx."""

    @pytest.mark.parametrize(
        ("endpoint", "body", "status", "word"),
        [
            (PUT, b'{"traits": ', 400, "invalid_json"),
            (PATCH, b'{"traits": ', 400, "invalid_json"),
            (ENRICH, b"{'identifiers': {}}", 400, "invalid_json"),
            (EVENTS, EVENT, 400, "invalid_json"),
            (PUT, b'{"traits": ["a"]}', 422, "traits"),
            (PUT, b'{"segments": "vip"}', 422, "segments"),
            (PUT, b'{"metrics": {"order_count": 2.5}}', 422, "order_count"),
            (PUT, b'{"metrics": {"visits": "many"}}', 422, "visits"),
            (PUT, b'{"metrics": {"last_order_at": "soon"}}', 422, "last_order_at"),
            (PUT, b'{"traits": {"x": NaN}}', 422, "finite"),
            (PATCH, b'{"traits": {"x": NaN}}', 422, "finite"),
            (PATCH, b'{"traits": {"x": "\\ud800"}}', 422, "surrogate"),
            (PATCH, b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
            (PUT, b'{"traits": {"x": "a\\u0000b"}}', 422, "NUL"),
            (PUT, b'{"colour": "red"}', 422, "colour"),
            (PUT, b'{"identifiers": {"e-mail": "a@example.com"}}', 400, "e-mail"),
            (PUT, b'{"identifiers": {"phone": "Jane"}}', 400, "phone"),
            (PUT, b'{"identifiers": {"email": "jane"}}', 400, "email"),
            (PUT, b"[" * 5000 + b"]" * 5000, 400, "error"),
            (PUT, b"[1, 2]", 422, "body"),
            (ENRICH, b'{"identifiers": ["email"]}', 422, "identifiers"),
            (ENRICH, b'{"identifiers": {}, "fields": 7}', 422, "fields"),
            (ENRICH, b'{"identifiers": {"bad type": "x"}}', 400, "bad type"),
            (ENRICH, orjson.dumps({"identifiers": {f"t{i}": i for i in range(40)}}), 422, "32"),
            (EVENTS, EVENT + b', "data": []}', 422, "data"),
            (EVENTS, EVENT + b', "occurred_at": 1e400}', 422, "occurred_at"),
            (BULK, b'{"identifiers": {}}', 400, "array"),
        ],
    )
    async def test_is_a_named_4xx(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        endpoint: tuple[str, str],
        body: bytes,
        status: int,
        word: str,
    ) -> None:
        if endpoint == PATCH:
            await http.put("/v1/profiles/crm_id/C-1", json={}, headers=headers)
        method, path = endpoint
        response = await http.request(method, path, content=body, headers={**headers, **JSON})
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"error", "detail"}
        assert word in response.text

    @pytest.mark.parametrize(
        ("method", "path"), [PUT, PATCH, ENRICH, EVENTS, ("GET", "/v1/profiles/crm_id/C-1")]
    )
    async def test_oversized_body_is_413(
        self, http: httpx.AsyncClient, headers: dict[str, str], method: str, path: str
    ) -> None:
        body = b'{"traits": {"x": "' + b"a" * 1_100_000 + b'"}}'
        response = await http.request(method, path, content=body, headers={**headers, **JSON})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"

    @pytest.mark.parametrize(
        "path",
        ["/v1/profiles/Bad-Type/x", "/v1/profiles/phone/Jane", "/v1/profiles/email/%24%7Bx%7D"],
    )
    async def test_invalid_path_identifier_is_400(
        self, http: httpx.AsyncClient, headers: dict[str, str], path: str
    ) -> None:
        for method in ("GET", "PUT", "DELETE"):
            response = await http.request(method, path, json={}, headers=headers)
            assert response.status_code == 400, (method, response.text)
            assert response.json()["error"] == "invalid_identifier"

    async def test_a_failed_write_leaves_nothing_behind(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.put(
            "/v1/profiles/crm_id/C-1",
            json={"identifiers": {"email": "a@example.com", "phone": "Jane"}},
            headers=headers,
        )
        assert response.status_code == 400
        for path in ("crm_id/C-1", "email/a@example.com"):
            assert (await http.get(f"/v1/profiles/{path}", headers=headers)).status_code == 404

    async def test_non_json_media_type_on_put_is_422_and_stores_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        """PUT reads a body that is not JSON as a body that is not an object: 422 (PATCH,
        which has two media types to choose from, answers 415: tests/profiles/test_router.py)."""
        response = await http.put(
            "/v1/profiles/crm_id/C-1",
            content=b"traits=1",
            headers={**headers, "content-type": "text/plain"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"
        assert (await http.get("/v1/profiles/crm_id/C-1", headers=headers)).status_code == 404
