"""Bad input at the OAuth endpoints: always a 4xx JSON error, never a 5xx."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import ClientMaker

ENDPOINTS = ["/oauth/token", "/oauth/revoke", "/oauth/introspect"]
FORM = "application/x-www-form-urlencoded"
GRANT = b"grant_type=client_credentials&token=x"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


BAD_AUTHORIZATION = {
    "not_base64": "Basic !!!",
    "no_colon": "Basic " + b64(b"justanid"),
    "empty_id": "Basic " + b64(b":secret"),
    "not_utf8": "Basic " + b64(b"\xff\xfe:\xc3\x28"),
    "nul_bytes": "Basic " + b64(b"id\x00:sec\x00ret"),
    "control_chars": "Basic " + b64(b"\x1b[2J:\x07"),
    "bearer": "Bearer x",
    "basic_alone": "Basic",
    "basic_space": "Basic ",
    "digest": 'Digest username="a"',
    "huge_base64": "Basic " + "A" * 10_240,
    "huge_credentials": "Basic " + b64(b"i" * 6000 + b":" + b"s" * 6000),
    "percent_garbage": "Basic " + b64(b"%zz%:%ff%"),
    "unicode_id": "Basic " + b64("ünïcødé:sécret".encode()),
}


def assert_json_4xx(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


class TestOAuthEndpointsBadInput:
    @pytest.mark.parametrize("path", ENDPOINTS)
    @pytest.mark.parametrize("kind", list(BAD_AUTHORIZATION))
    async def test_garbage_authorization_headers(
        self, http: httpx.AsyncClient, path: str, kind: str
    ) -> None:
        response = await http.post(
            path,
            content=GRANT,
            headers={"Content-Type": FORM, "Authorization": BAD_AUTHORIZATION[kind]},
        )
        assert_json_4xx(response)
        assert response.status_code in (400, 401)

    @pytest.mark.parametrize(
        "form",
        [
            b"grant_type=client_credentials&client_id=%00&client_secret=x",
            b"grant_type=client_credentials&client_id=" + b"i" * 5000 + b"&client_secret=x",
            b"grant_type=client_credentials&client_id=&client_secret=x",
            b"grant_type=client_credentials&client_id=x",
            b"grant_type=client_credentials&client_secret=x",
            b"grant_type=client_credentials&client_id=%E2%80%AE&client_secret=%F0%9F%98%80",
        ],
    )
    async def test_garbage_post_credentials(self, http: httpx.AsyncClient, form: bytes) -> None:
        response = await http.post("/oauth/token", content=form, headers={"Content-Type": FORM})
        assert_json_4xx(response)

    @pytest.mark.parametrize("path", ENDPOINTS)
    async def test_a_1_mb_form_is_413(self, http: httpx.AsyncClient, path: str) -> None:
        body = GRANT + b"&pad=" + b"a" * 1_048_576
        response = await http.post(path, content=body, headers={"Content-Type": FORM})
        assert response.status_code == 413
        assert_json_4xx(response)

    async def test_a_form_far_larger_than_a_token_request_is_413(
        self, http: httpx.AsyncClient
    ) -> None:
        body = GRANT + b"&pad=" + b"a" * 100_000
        response = await http.post("/oauth/token", content=body, headers={"Content-Type": FORM})
        assert response.status_code == 413
        assert_json_4xx(response)

    async def test_a_large_body_without_a_length_is_413(self, http: httpx.AsyncClient) -> None:
        async def chunks():  # type: ignore[no-untyped-def]
            yield GRANT
            for _ in range(64):
                yield b"&pad=" + b"a" * 16_384

        response = await http.post("/oauth/token", content=chunks(), headers={"Content-Type": FORM})
        assert response.status_code == 413
        assert_json_4xx(response)

    @pytest.mark.parametrize(
        "form",
        [
            b"grant_type=client_credentials&grant_type=client_credentials",
            b"grant_type=client_credentials&scope=profiles:read&scope=admin",
            b"grant_type=client_credentials&client_id=a&client_id=b&client_secret=x",
        ],
    )
    async def test_repeated_parameters_are_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker, form: bytes
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            content=form,
            headers={"Content-Type": FORM},
            auth=(client.client_id, client.client_secret),
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    @pytest.mark.parametrize(
        "form",
        [
            b"grant_type=client_credentials&scope=%ff",
            b"grant_type=client_credentials&scope=%c3%28",
            b"grant_type=client_credentials&scope=\xff",
            "grant_type=client_credentials&scope=profiles:réad".encode(),
        ],
    )
    async def test_invalid_utf8_is_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker, form: bytes
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            content=form,
            headers={"Content-Type": FORM},
            auth=(client.client_id, client.client_secret),
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    @pytest.mark.parametrize("path", ENDPOINTS)
    @pytest.mark.parametrize(
        "content_type",
        [None, "text/plain", "application/json", "multipart/form-data; boundary=x", "x/y"],
    )
    async def test_other_content_types_are_invalid_request(
        self, http: httpx.AsyncClient, path: str, content_type: str | None
    ) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await http.post(path, content=GRANT, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    async def test_a_form_with_a_charset_parameter_is_accepted(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            content=b"grant_type=client_credentials",
            headers={"Content-Type": FORM + "; charset=UTF-8"},
            auth=(client.client_id, client.client_secret),
        )
        assert response.status_code == 200

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
    @pytest.mark.parametrize("path", ENDPOINTS)
    async def test_other_methods_are_405_json(
        self, http: httpx.AsyncClient, method: str, path: str
    ) -> None:
        response = await http.request(method, path)
        assert response.status_code == 405
        assert_json_4xx(response)

    async def test_an_empty_body_is_invalid_request(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/oauth/token", content=b"", headers={"Content-Type": FORM})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
