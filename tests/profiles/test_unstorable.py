"""Documents no column can hold, or nested past the limit: a named 4xx, never a 500.

PostgreSQL refuses U+0000 and lone surrogates (UTF-8 cannot encode them), at any depth and in
member names too; a document nests at most ``document_max_depth`` (32) levels. Bulk requests
fail such a record alone and store the rest.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
PATCH_JSON = {"content-type": "application/merge-patch+json"}


def nested(levels: int, leaf: bytes = b"1") -> bytes:
    """``levels`` objects one inside the other, as JSON text: {"a": {"a": ... leaf}}."""
    return b'{"a": ' * levels + leaf + b"}" * levels


# Each is the JSON text of a profile document's members (escapes as a caller sends them).
BAD_MEMBERS = {
    "nul_in_a_nested_string": rb'"recommendations": [{"product_id": "SKU\u0000-1"}]',
    "nul_in_a_nested_key": rb'"traits": {"prefs": {"col\u0000our": "red"}}',
    "nul_in_a_nested_list": rb'"traits": {"tags": [["a", "b\u0000"]]}',
    "lone_surrogate_in_a_trait": rb'"traits": {"name": "Jane \ud800"}',
    "lone_surrogate_in_a_key": rb'"traits": {"\udc00x": 1}',
    "lone_surrogate_in_a_segment": rb'"segments": ["vip\ud83d"]',
    "lone_surrogate_in_the_source": rb'"source": "crm\ud800"',
    "lone_surrogate_in_an_identifier": rb'"identifiers": {"guest_ref": "g-\ud800"}',
    "traits_nested_300_levels": b'"traits": ' + nested(300),
    "recommendations_nested_300_levels": b'"recommendations": [' + nested(300) + b"]",
}
WORDS = {
    "nul": "NUL",
    "lone_surrogate": "surrogate",
    "traits_nested": "levels",
    "recommendations_nested": "levels",
}


def word_for(case: str) -> str:
    return next(word for prefix, word in WORDS.items() if case.startswith(prefix))


def document(members: bytes, crm_id: str = "C-9") -> bytes:
    if members.startswith(b'"identifiers"'):
        return b"{" + members + b"}"
    return b'{"identifiers": {"crm_id": "' + crm_id.encode() + b'"}, ' + members + b"}"


GOOD = {"identifiers": {"crm_id": "C-1"}, "traits": {"tier": "gold"}}


def assert_named_422(response: httpx.Response, word: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "validation_error"
    assert word in response.text


class TestUnstorableDocuments:
    @pytest.mark.parametrize("case", BAD_MEMBERS)
    async def test_put_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str], case: str
    ) -> None:
        response = await http.put(
            "/v1/profiles/crm_id/C-9",
            content=document(BAD_MEMBERS[case]),
            headers={**headers, **JSON},
        )

        assert_named_422(response, word_for(case))
        missing = await http.get("/v1/profiles/crm_id/C-9", headers=headers)
        assert missing.status_code == 404

    @pytest.mark.parametrize("case", BAD_MEMBERS)
    async def test_patch_is_422_and_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str], case: str
    ) -> None:
        put = await http.put("/v1/profiles/crm_id/C-1", json=GOOD, headers=headers)
        assert put.status_code == 201, put.text

        response = await http.patch(
            "/v1/profiles/crm_id/C-1",
            content=b"{" + BAD_MEMBERS[case] + b"}",
            headers={**headers, **PATCH_JSON},
        )

        # A lone surrogate too: the same 422 as the PUT, not orjson's refusal to parse it.
        assert_named_422(response, word_for(case))
        after = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert after.json()["version"] == put.json()["version"]

    @pytest.mark.parametrize("case", BAD_MEMBERS)
    async def test_bulk_ndjson_fails_the_record_alone(
        self, http: httpx.AsyncClient, headers: dict[str, str], case: str
    ) -> None:
        body = orjson.dumps(GOOD) + b"\n" + document(BAD_MEMBERS[case]) + b"\n"

        response = await http.post("/v1/profiles/bulk", content=body, headers={**headers, **NDJSON})

        assert response.status_code == 200, response.text
        outcome = response.json()
        assert (outcome["created"], outcome["failed"]) == (1, 1)
        assert outcome["results"][0] == {"index": 0, "status": "created"}
        assert outcome["results"][1]["index"] == 1
        assert outcome["results"][1]["status"] == "failed"
        stored = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert stored.json()["traits"] == {"tier": "gold"}
        missing = await http.get("/v1/profiles/crm_id/C-9", headers=headers)
        assert missing.status_code == 404

    @pytest.mark.parametrize("case", BAD_MEMBERS)
    async def test_bulk_json_array_fails_the_record_alone(
        self, http: httpx.AsyncClient, headers: dict[str, str], case: str
    ) -> None:
        body = b"[" + document(BAD_MEMBERS[case]) + b", " + orjson.dumps(GOOD) + b"]"

        response = await http.post("/v1/profiles/bulk", content=body, headers={**headers, **JSON})

        assert response.status_code == 200, response.text
        outcome = response.json()
        assert (outcome["created"], outcome["failed"]) == (1, 1)
        assert outcome["results"][0]["index"] == 0
        assert outcome["results"][0]["status"] == "failed"
        assert word_for(case) in outcome["results"][0]["error"]
        assert outcome["results"][1] == {"index": 1, "status": "created"}
        stored = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert stored.json()["traits"] == {"tier": "gold"}

    async def test_a_bulk_array_that_is_not_json_is_still_400(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        body = b"[" + orjson.dumps(GOOD) + b", {oops}]"

        response = await http.post("/v1/profiles/bulk", content=body, headers={**headers, **JSON})

        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_json"


EVENT = b'"event_id": "e-1", "type": "view", "identifiers": {"crm_id": "C-1"}'
BAD_EVENTS = {
    "lone_surrogate_in_data": b', "data": {"page": "/home\\ud800"}',
    "lone_surrogate_in_a_data_key": b', "data": {"x": {"\\udfff": 1}}',
    "nul_deep_in_data": b', "data": {"items": [{"sku": "a\\u0000"}]}',
    "data_nested_300_levels": b', "data": ' + nested(300),
    # A whole event: these replace EVENT.
    "lone_surrogate_in_the_event_id": b'"event_id": "e-\\ud800", "type": "view", '
    b'"identifiers": {"crm_id": "C-1"}',
    "lone_surrogate_in_the_type": b'"event_id": "e-1", "type": "v\\ud800", '
    b'"identifiers": {"crm_id": "C-1"}',
}


class TestUnstorableEvents:
    @pytest.mark.parametrize("case", BAD_EVENTS)
    async def test_is_422_and_stores_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str], case: str
    ) -> None:
        tail = BAD_EVENTS[case]
        body = b"{" + (tail if tail.startswith(b'"event_id"') else EVENT + tail) + b"}"

        response = await http.post("/v1/events", content=body, headers={**headers, **JSON})

        word = "levels" if "nested" in case else "NUL" if "nul" in case else "surrogate"
        assert_named_422(response, word)
        missing = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert missing.status_code == 404


class TestDeepMergePatch:
    async def test_a_patch_nested_900_levels_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        put = await http.put("/v1/profiles/crm_id/C-1", json=GOOD, headers=headers)
        assert put.status_code == 201, put.text

        response = await http.patch(
            "/v1/profiles/crm_id/C-1",
            content=b'{"traits": ' + nested(900) + b"}",
            headers={**headers, **PATCH_JSON},
        )

        assert_named_422(response, "levels")
        after = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert after.json()["traits"] == {"tier": "gold"}

    async def test_a_deep_patch_within_the_limit_merges(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        # The document is level 1 and traits level 2: 30 objects inside traits reach 32.
        deepest = orjson.loads(nested(29, b'{"keep": 1, "drop": 2}'))
        put = await http.put(
            "/v1/profiles/crm_id/C-1",
            json={"traits": {"tree": deepest}},
            headers=headers,
        )
        assert put.status_code == 201, put.text

        patch = b'{"traits": {"tree": ' + nested(29, b'{"drop": null, "new": 3}') + b"}}"
        response = await http.patch(
            "/v1/profiles/crm_id/C-1", content=patch, headers={**headers, **PATCH_JSON}
        )

        assert response.status_code == 200, response.text
        expected = orjson.loads(nested(29, b'{"keep": 1, "new": 3}'))
        assert response.json()["traits"] == {"tree": expected}
        stored = await http.get("/v1/profiles/crm_id/C-1", headers=headers)
        assert stored.json()["traits"] == {"tree": expected}

    async def test_one_level_past_the_limit_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        too_deep = b'{"traits": {"tree": ' + nested(30, b'{"x": 1}') + b"}}"

        response = await http.put(
            "/v1/profiles/crm_id/C-1", content=too_deep, headers={**headers, **JSON}
        )

        assert_named_422(response, "32 levels")


class TestLargeIntegers:
    async def test_content_becomes_floats_and_identifiers_keep_their_digits(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        digits = "123456789012345678901234567890"
        body = b'{"identifiers": {"guest_ref": ' + digits.encode() + b'}, "traits": {"n": '
        body += digits.encode() + b"}}"

        response = await http.put(
            "/v1/profiles/crm_id/C-1", content=body, headers={**headers, **JSON}
        )

        assert response.status_code == 201, response.text
        assert response.json()["identifiers"]["guest_ref"] == digits
        assert response.json()["traits"] == {"n": float(digits)}


class TestMembersOfTheWrongKind:
    """A scalar where an object or a list belongs is the 422 of payload validation, also in a
    document holding an integer past 64 bits (which makes the walk convert every member: it
    tried to iterate the scalar, a 500; found by schemathesis)."""

    @pytest.mark.parametrize(
        "member",
        [
            b'"traits": 5, "metrics": {"big": 100000000000000000000000}',
            b'"metrics": 2.5, "traits": {"big": 100000000000000000000000}',
            b'"recommendations": true, "traits": {"big": 100000000000000000000000}',
        ],
    )
    async def test_put_and_patch_are_422(
        self, http: httpx.AsyncClient, headers: dict[str, str], member: bytes
    ) -> None:
        put = await http.put(
            "/v1/profiles/crm_id/C-7", content=b"{" + member + b"}", headers={**headers, **JSON}
        )
        assert put.status_code == 422, put.text
        assert put.json()["error"] == "validation_error"
        good = await http.put("/v1/profiles/crm_id/C-7", json={"traits": {}}, headers=headers)
        assert good.status_code == 201, good.text
        patch = await http.patch(
            "/v1/profiles/crm_id/C-7",
            content=b"{" + member + b"}",
            headers={**headers, **PATCH_JSON},
        )
        assert patch.status_code == 422, patch.text
        assert patch.json()["error"] == "validation_error"
