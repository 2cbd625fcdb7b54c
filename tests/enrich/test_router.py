from __future__ import annotations

import gzip

import httpx
import orjson
import pytest

from tests.conftest import AppFactory, TokenMaker

KEYS = [
    "found",
    "matched",
    "profile_id",
    "traits",
    "segments",
    "metrics",
    "recommendations",
    "updated_at",
    "stale",
]
JANE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-1001", "phone": "+14155552671"},
    "traits": {"first_name": "Jane", "tier": "gold", "address": {"city": "Oslo", "zip": "0150"}},
    "segments": ["high_value", "newsletter"],
    "metrics": {"lifetime_value": 1830.5, "order_count": 14, "visits": 31},
    "recommendations": [{"product_id": "SKU-1", "score": 0.9}],
}


@pytest.fixture
async def jane(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, object]:
    response = await http.put("/v1/profiles/crm_id/C-1001", json=JANE, headers=headers)
    assert response.status_code == 201
    body: dict[str, object] = response.json()
    return body


class TestEnrichPost:
    async def test_personalize_template_finds_a_normalized_email(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        response = await http.post(
            "/v1/enrich",
            json={"identifiers": {"guest_ref": "${guest.ref}", "email": " Jane@Example.COM "}},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.headers["x-cache"] == "miss"
        body = response.json()
        assert list(body) == KEYS
        assert body["found"] is True
        assert body["matched"] == "email"
        assert body["profile_id"] == jane["profile_id"]
        assert body["traits"] == JANE["traits"]
        assert body["segments"] == JANE["segments"]
        assert body["metrics"] == {"lifetime_value": 1830.5, "order_count": 14, "visits": 31}
        assert body["recommendations"] == JANE["recommendations"]
        assert body["updated_at"] == jane["updated_at"]
        assert body["stale"] is False

    async def test_unknown_guest_has_the_same_keys(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        response = await http.post(
            "/v1/enrich", json={"identifiers": {"email": "nobody@example.com"}}, headers=headers
        )
        assert response.status_code == 200
        assert response.json() == {
            "found": False,
            "matched": None,
            "profile_id": None,
            "traits": {},
            "segments": [],
            "metrics": {},
            "recommendations": [],
            "updated_at": None,
            "stale": False,
        }

    @pytest.mark.parametrize(
        "identifiers",
        [{}, {"email": "", "guest_ref": "${guest.ref}"}, {"phone": "Jane"}, {"email": None}],
    )
    async def test_nothing_usable_is_not_found_not_an_error(
        self, http: httpx.AsyncClient, headers: dict[str, str], identifiers: dict[str, object]
    ) -> None:
        response = await http.post("/v1/enrich", json={"identifiers": identifiers}, headers=headers)
        assert response.status_code == 200
        assert response.json()["found"] is False
        assert list(response.json()) == KEYS

    async def test_first_identifier_in_request_order_wins(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        await http.put("/v1/profiles/guest_ref/g-2", json={"traits": {"n": 2}}, headers=headers)
        first = await http.post(
            "/v1/enrich",
            json={"identifiers": {"guest_ref": "g-2", "crm_id": "C-1001"}},
            headers=headers,
        )
        assert (first.json()["matched"], first.json()["traits"]) == ("guest_ref", {"n": 2})
        second = await http.post(
            "/v1/enrich",
            json={"identifiers": {"guest_ref": "g-unknown", "CRM_ID": "C-1001"}},
            headers=headers,
        )
        assert second.json()["matched"] == "crm_id"

    async def test_lenient_identifier_forms(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        for identifiers in (
            {"phone": "(415) 555-2671"},
            {"Email": "JANE@EXAMPLE.COM"},
            {"email_sha256": str(jane["identifiers"]["email_sha256"]).upper()},  # type: ignore[index]
        ):
            response = await http.post(
                "/v1/enrich", json={"identifiers": identifiers}, headers=headers
            )
            assert response.json()["found"] is True, identifiers

    async def test_numeric_identifier_values_are_strings(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await http.put("/v1/profiles/crm_id/1001", json={}, headers=headers)
        response = await http.post(
            "/v1/enrich", json={"identifiers": {"crm_id": 1001}}, headers=headers
        )
        assert response.json()["found"] is True

    async def test_invalid_identifier_type_is_400(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/enrich", json={"identifiers": {"e-mail": "a@example.com"}}, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_identifier"
        assert "e-mail" in response.json()["detail"]

    async def test_unknown_member_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/enrich", json={"identifier": {"email": "a@example.com"}}, headers=headers
        )
        assert response.status_code == 422
        assert "identifier" in response.text

    async def test_needs_a_token(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/enrich", json={"identifiers": {}})
        assert response.status_code == 401

    async def test_needs_the_read_scope(
        self, http: httpx.AsyncClient, token_for: TokenMaker
    ) -> None:
        token = await token_for("events:write")
        response = await http.post(
            "/v1/enrich", json={"identifiers": {}}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403


class TestEnrichGet:
    async def test_query_parameters_are_identifiers_in_order(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        response = await http.get(
            "/v1/enrich?guest_ref=%24%7Bguest.ref%7D&email=Jane%40example.com"
            "&fields=traits.tier,metrics.order_count",
            headers=headers,
        )
        assert response.status_code == 200
        body = response.json()
        assert body["matched"] == "email"
        assert body["traits"] == {"tier": "gold"}
        assert body["metrics"] == {"order_count": 14}
        assert body["segments"] == []

    async def test_too_many_identifiers_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        query = "&".join(f"t{i}=x" for i in range(40))
        response = await http.get(f"/v1/enrich?{query}", headers=headers)
        assert response.status_code == 422
        assert "32" in response.json()["detail"]

    async def test_unknown_guest(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        response = await http.get("/v1/enrich?email=nobody%40example.com", headers=headers)
        assert response.status_code == 200
        assert list(response.json()) == KEYS
        assert response.json()["found"] is False


class TestFieldSelection:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            (
                ["traits.tier", "metrics.lifetime_value"],
                {"traits": {"tier": "gold"}, "metrics": {"lifetime_value": 1830.5}},
            ),
            ("segments, traits.address.city", {"segments": JANE["segments"]}),
            (["recommendations"], {"recommendations": JANE["recommendations"]}),
            (["traits", "traits.tier"], {"traits": JANE["traits"]}),
            ("${fields}", None),
            (["traits.missing", "profile_id"], {}),
        ],
    )
    async def test_fields_select_inside_the_fixed_keys(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        jane: dict[str, object],
        fields: object,
        expected: dict[str, object] | None,
    ) -> None:
        response = await http.post(
            "/v1/enrich",
            json={"identifiers": {"crm_id": "C-1001"}, "fields": fields},
            headers=headers,
        )
        body = response.json()
        assert list(body) == KEYS
        assert body["found"] is True
        if expected is None:  # a placeholder: no selection at all
            assert body["traits"] == JANE["traits"]
            return
        if fields == "segments, traits.address.city":
            expected = {**expected, "traits": {"address": {"city": "Oslo"}}}
        for name in ("traits", "segments", "metrics", "recommendations"):
            empty: object = [] if name in ("segments", "recommendations") else {}
            assert body[name] == expected.get(name, empty), name

    async def test_unknown_field_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.get("/v1/enrich?crm_id=C-1&fields=trait.tier", headers=headers)
        assert response.status_code == 422
        assert "trait.tier" in response.json()["detail"]


class TestAnswerSize:
    async def test_5000_recommendations_are_cut_to_the_cap(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        recommendations = [{"product_id": f"SKU-{i:05d}", "score": 0.5} for i in range(5000)]
        document = {"recommendations": recommendations, "segments": ["a", "b"]}
        put = await http.put("/v1/profiles/crm_id/big", json=document, headers=headers)
        assert put.status_code == 201
        response = await http.post(
            "/v1/enrich", json={"identifiers": {"crm_id": "big"}}, headers=headers
        )
        assert len(response.text) <= 8000
        body = response.json()
        assert body["truncated"] is True
        assert body["segments"] == ["a", "b"]
        kept = body["recommendations"]
        assert 0 < len(kept) < 5000
        assert kept == recommendations[: len(kept)]
        again = await http.post(
            "/v1/enrich", json={"identifiers": {"crm_id": "big"}}, headers=headers
        )
        assert again.content == response.content

    async def test_small_answers_are_not_marked(
        self, http: httpx.AsyncClient, headers: dict[str, str], jane: dict[str, object]
    ) -> None:
        response = await http.post(
            "/v1/enrich", json={"identifiers": {"crm_id": "C-1001"}}, headers=headers
        )
        assert "truncated" not in response.json()

    async def test_the_cap_is_a_setting(
        self, app_factory: AppFactory, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        traits = {f"t{i:03d}": "x" * 20 for i in range(100)}
        await http.put("/v1/profiles/crm_id/many", json={"traits": traits}, headers=headers)
        small = await app_factory(answer_max_chars=1000)
        response = await small.http.post(
            "/v1/enrich", json={"identifiers": {"crm_id": "many"}}, headers=headers
        )
        assert len(response.text) <= 1000
        body = response.json()
        assert body["truncated"] is True
        kept = sorted(body["traits"])
        assert kept == sorted(traits)[: len(kept)]  # trait keys go in sorted order from the end

    async def test_large_answers_are_gzipped_when_asked(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        traits = {f"t{i:03d}": "x" * 20 for i in range(100)}
        await http.put("/v1/profiles/crm_id/gz", json={"traits": traits}, headers=headers)
        query = {"identifiers": {"crm_id": "gz"}}
        zipped = await http.post(
            "/v1/enrich", json=query, headers={**headers, "Accept-Encoding": "gzip"}
        )
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.json()["traits"] == traits  # httpx decompresses
        raw = await http.post(
            "/v1/enrich", json=query, headers={**headers, "Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in raw.headers
        async with http.stream(
            "POST", "/v1/enrich", json=query, headers={**headers, "Accept-Encoding": "gzip"}
        ) as streamed:
            compressed = b"".join([chunk async for chunk in streamed.aiter_raw()])
        assert len(compressed) < len(raw.content)
        assert gzip.decompress(compressed) == raw.content

    async def test_small_answers_are_not_gzipped(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/enrich",
            json={"identifiers": {"crm_id": "none"}},
            headers={**headers, "Accept-Encoding": "gzip"},
        )
        assert "content-encoding" not in response.headers


class TestAnswerHeaders:
    async def test_both_doors_gzip_and_state_the_length_they_send(
        self, http: httpx.AsyncClient, headers: dict[str, str], token_for: TokenMaker
    ) -> None:
        """The first request with a token this process has not seen goes through the route,
        the next through the fast path: both gzip a large answer and say how long it is."""
        traits = {f"t{i:03d}": "x" * 20 for i in range(100)}
        await http.put("/v1/profiles/crm_id/gz", json={"traits": traits}, headers=headers)
        query = {"identifiers": {"crm_id": "gz"}}
        for encoding in ("gzip", "identity"):
            fresh = {"Authorization": f"Bearer {await token_for('profiles:read')}"}
            for _door in ("route", "fast path"):
                async with http.stream(
                    "POST", "/v1/enrich", json=query, headers={**fresh, "Accept-Encoding": encoding}
                ) as answer:
                    sent = b"".join([chunk async for chunk in answer.aiter_raw()])
                assert answer.status_code == 200
                assert answer.headers["content-length"] == str(len(sent))
                assert answer.headers.get("content-encoding") == (
                    "gzip" if encoding == "gzip" else None
                )
                body = gzip.decompress(sent) if encoding == "gzip" else sent
                assert orjson.loads(body)["traits"] == traits
