"""What the service sends is what its OpenAPI document says: status, body or none, headers."""

from __future__ import annotations

from typing import Any

import httpx

from tests.auth.conftest import basic, fetch_token, revoke
from tests.conftest import ClientMaker, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, set_allowlist, set_limit

PROFILE = "/v1/profiles/{id_type}/{id_value}"


def documented(
    running: RunningApp, method: str, path: str, answer: httpx.Response
) -> dict[str, Any]:
    """The documented response for ``answer``; fails when the document does not match it."""
    operation = running.app.openapi()["paths"][path][method.lower()]
    status = str(answer.status_code)
    assert status in operation["responses"], (method, path, status, answer.text)
    response: dict[str, Any] = operation["responses"][status]
    content = response.get("content", {})
    if answer.content == b"":
        assert content == {}, f"{method} {path} {status}: empty, documented as {list(content)}"
    else:
        media = answer.headers["content-type"].split(";")[0].strip()
        assert media in content, f"{method} {path} {status}: {media}, documented {list(content)}"
    for name in response.get("headers", {}):
        if name != "Content-Encoding":  # only for large answers
            assert name.lower() in answer.headers, (method, path, status, name)
    return response


class TestOAuthAnswersAsDocumented:
    async def test_revocation_answers_200_with_no_body(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(running.http, client)
        answer = await revoke(running.http, client, token)
        assert answer.status_code == 200
        assert answer.content == b""
        assert "content-type" not in answer.headers
        documented(running, "POST", "/oauth/revoke", answer)

    async def test_a_client_calling_from_outside_its_allowlist_is_a_documented_403(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        await set_allowlist(running, client.client_id, ["198.51.100.0/24"])
        for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke"):
            answer = await running.http.post(
                path,
                data={"grant_type": "client_credentials", "token": "x"},
                headers={"Authorization": basic(client.client_id, client.client_secret)},
            )
            assert answer.status_code == 403, path
            assert answer.json()["error"] == "access_denied"
            documented(running, "POST", path, answer)

    async def test_a_wrong_basic_secret_is_a_documented_401_with_its_challenge(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        answer = await running.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic(client.client_id, "wrong")},
        )
        assert answer.status_code == 401
        response = documented(running, "POST", "/oauth/token", answer)
        assert "WWW-Authenticate" in response["headers"]


class TestProtectedAnswersAsDocumented:
    async def test_over_the_rate_limit_is_a_documented_429_with_its_headers(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(running.http, client)
        headers = {"Authorization": f"Bearer {token}"}
        await set_limit(running, client.client_id, 0.01, 1)
        assert (await running.http.post(ENRICH, json=GUEST, headers=headers)).status_code == 200
        for method, template, path in (
            ("POST", ENRICH, ENRICH),
            ("GET", PROFILE, "/v1/profiles/email/a@example.com"),
        ):
            answer = await running.http.request(method, path, json=None, headers=headers)
            assert answer.status_code == 429, path
            response = documented(running, method, template, answer)
            assert {"Retry-After", "RateLimit-Limit"} <= set(response["headers"])

    async def test_erasure_answers_204_with_no_body(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:write profiles:read")
        token = await fetch_token(running.http, client)
        headers = {"Authorization": f"Bearer {token}"}
        path = "/v1/profiles/email/erase-me@example.com"
        body = {"identifiers": {"email": "erase-me@example.com"}}
        created = await running.http.put(path, json=body, headers=headers)
        assert created.status_code == 201, created.text
        answer = await running.http.delete(path, headers=headers)
        assert answer.status_code == 204
        documented(running, "DELETE", PROFILE, answer)


class TestEveryProtectedOperation:
    async def test_without_credentials_is_a_documented_401(self, running: RunningApp) -> None:
        """Every operation the document says needs credentials refuses a caller with none.

        (Schemathesis' ignored_auth check cannot judge this since an operation accepts either a
        token or an API key: tests/qa/test_schemathesis.py turns it off.)"""
        document = running.app.openapi()
        checked = []
        for template, operations in document["paths"].items():
            if template.startswith("/oauth/"):
                continue  # client authentication, after the form is read: tests/auth
            path = template.replace("{id_type}", "email").replace("{id_value}", "a@example.com")
            for method, operation in operations.items():
                if not operation.get("security"):
                    continue
                answer = await running.http.request(method.upper(), path, json={})
                assert answer.status_code == 401, (method, template, answer.text)
                documented(running, method, template, answer)
                checked.append((method, template))
        assert len(checked) >= 10, checked  # (the enrich, profile, event and admin operations)
