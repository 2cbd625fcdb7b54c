from __future__ import annotations

import asyncio

import httpx

from tests.conftest import AppFactory, RunningApp, TokenMaker

JANE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-1001"},
    "traits": {"first_name": "Jane", "tier": "gold"},
    "segments": ["high_value"],
    "metrics": {"lifetime_value": 1830.5, "order_count": 14, "visits": 31},
    "recommendations": [{"product_id": "SKU-1", "score": 0.9, "name": "Boots"}],
    "source": "crm",
}
MERGE = {"content-type": "application/merge-patch+json"}


async def put_jane(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    response = await http.put("/v1/profiles/crm_id/C-1001", json=JANE, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response


class TestGetProfile:
    async def test_reads_by_any_identifier_including_the_email_hash(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        created = (await put_jane(http, headers)).json()
        sha = created["identifiers"]["email_sha256"]
        for path in ("crm_id/C-1001", "email/JANE@example.com", f"email_sha256/{sha.upper()}"):
            response = await http.get(f"/v1/profiles/{path}", headers=headers)
            assert response.status_code == 200, path
            assert response.json() == created

    async def test_whole_profile_with_metrics_as_numbers(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        body = (await http.get("/v1/profiles/crm_id/C-1001", headers=headers)).json()
        assert body["identifiers"]["email"] == "jane@example.com"
        assert body["identifiers"]["crm_id"] == "C-1001"
        assert body["metrics"] == {"lifetime_value": 1830.5, "order_count": 14, "visits": 31}
        assert body["recommendations"] == JANE["recommendations"]
        assert body["source"] == "crm"
        assert body["version"] == 1

    async def test_unknown_profile_is_404(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.get("/v1/profiles/email/nobody@example.com", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"

    async def test_needs_the_read_scope(
        self, http: httpx.AsyncClient, token_for: TokenMaker
    ) -> None:
        token = await token_for("events:write")
        response = await http.get(
            "/v1/profiles/crm_id/C-1", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403
        assert "insufficient_scope" in response.headers["www-authenticate"]


class TestPutProfile:
    async def test_creates_then_replaces(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        first = await http.put("/v1/profiles/crm_id/C-1001", json=JANE, headers=headers)
        assert first.status_code == 201
        assert first.headers["location"] == "/v1/profiles/crm_id/C-1001"
        second = await http.put(
            "/v1/profiles/crm_id/C-1001",
            json={**JANE, "traits": {"tier": "platinum"}, "segments": []},
            headers=headers,
        )
        assert second.status_code == 200
        body = second.json()
        assert body["profile_id"] == first.json()["profile_id"]
        assert body["traits"] == {"tier": "platinum"}
        assert body["segments"] == []
        assert body["version"] == 2

    async def test_identical_content_keeps_the_version(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        first = (await put_jane(http, headers)).json()
        again = await http.put("/v1/profiles/crm_id/C-1001", json=JANE, headers=headers)
        assert again.status_code == 200
        assert again.json()["version"] == first["version"]
        assert again.json()["updated_at"] == first["updated_at"]

    async def test_path_identifier_is_added(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.put(
            "/v1/profiles/guest_ref/g-1", json={"traits": {"a": 1}}, headers=headers
        )
        assert response.status_code == 201
        assert response.json()["identifiers"] == {"guest_ref": "g-1"}

    async def test_identifiers_are_added_never_removed(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.put(
            "/v1/profiles/crm_id/C-1001",
            json={"identifiers": {"phone": "+44 20 7946 0958"}},
            headers=headers,
        )
        ids = response.json()["identifiers"]
        assert ids["email"] == "jane@example.com"
        assert ids["phone"] == "+442079460958"

    async def test_without_event_metrics_keeps_the_purchase_counts(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.put(
            "/v1/profiles/crm_id/C-1001",
            json={**JANE, "metrics": {"visits": 32}},
            headers=headers,
        )
        assert response.json()["metrics"] == {
            "visits": 32,
            "order_count": 14,
            "lifetime_value": 1830.5,
        }

    async def test_numeric_strings_are_numbers(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.put(
            "/v1/profiles/crm_id/C-9",
            json={
                "metrics": {"order_count": "3", "lifetime_value": "12.50", "visits": "7"},
                "recommendations": [{"product_id": "P-1", "score": "0.75"}],
            },
            headers=headers,
        )
        assert response.json()["recommendations"] == [{"product_id": "P-1", "score": 0.75}]
        assert response.json()["metrics"] == {
            "order_count": 3,
            "lifetime_value": 12.5,
            "visits": 7,
        }

    async def test_identifier_of_another_profile_is_409(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        await http.put("/v1/profiles/crm_id/C-2002", json={"traits": {"a": 1}}, headers=headers)
        response = await http.put(
            "/v1/profiles/crm_id/C-2002",
            json={"identifiers": {"email": "Jane@Example.com"}, "traits": {"a": 2}},
            headers=headers,
        )
        assert response.status_code == 409
        assert response.json()["error"] == "conflict"
        assert "email 'jane@example.com'" in response.json()["detail"]
        # Nothing was merged or half-written.
        other = (await http.get("/v1/profiles/crm_id/C-2002", headers=headers)).json()
        assert other["traits"] == {"a": 1}
        assert "email" not in other["identifiers"]

    async def test_identifiers_of_two_profiles_are_409(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        await http.put("/v1/profiles/guest_ref/g-2", json={}, headers=headers)
        response = await http.put(
            "/v1/profiles/crm_id/C-3",
            json={"identifiers": {"email": "jane@example.com", "guest_ref": "g-2"}},
            headers=headers,
        )
        assert response.status_code == 409
        assert "guest_ref" in response.json()["detail"]
        assert (await http.get("/v1/profiles/crm_id/C-3", headers=headers)).status_code == 404

    async def test_new_path_identifier_joins_the_profile_the_body_names(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        jane = (await put_jane(http, headers)).json()
        response = await http.put(
            "/v1/profiles/guest_ref/g-7",
            json={"identifiers": {"email": "jane@example.com"}, "traits": {"tier": "gold"}},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.json()["profile_id"] == jane["profile_id"]
        assert response.json()["identifiers"]["guest_ref"] == "g-7"

    async def test_body_naming_another_value_of_the_path_type_is_400(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.put(
            "/v1/profiles/crm_id/C-1", json={"identifiers": {"crm_id": "C-2"}}, headers=headers
        )
        assert response.status_code == 400
        assert "crm_id" in response.json()["detail"]


class TestPatchProfile:
    async def test_merges_traits_and_removes_nulls(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/email/jane@example.com",
            content=b'{"traits": {"tier": "platinum", "first_name": null}, "segments": ["vip"]}',
            headers={**headers, **MERGE},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["traits"] == {"tier": "platinum"}
        assert body["segments"] == ["vip"]
        assert body["metrics"]["order_count"] == 14
        assert body["version"] == 2

    async def test_removes_an_identifier_with_null(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001",
            json={"identifiers": {"email": None}},
            headers=headers,  # application/json is accepted too
        )
        assert response.status_code == 200
        assert response.json()["identifiers"] == {"crm_id": "C-1001"}
        gone = await http.get("/v1/profiles/email/jane@example.com", headers=headers)
        assert gone.status_code == 404

    async def test_a_value_replaces_the_identifier_of_its_type(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        before = (await put_jane(http, headers)).json()
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001",
            json={"identifiers": {"email": "Jane.Doe@Example.com"}},
            headers={**headers, **MERGE},
        )
        ids = response.json()["identifiers"]
        assert ids["email"] == "jane.doe@example.com"
        assert ids["email_sha256"] != before["identifiers"]["email_sha256"]
        old = await http.get("/v1/profiles/email/jane@example.com", headers=headers)
        assert old.status_code == 404

    async def test_removing_every_identifier_is_409(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await http.put("/v1/profiles/crm_id/C-5", json={}, headers=headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-5", json={"identifiers": {"crm_id": None}}, headers=headers
        )
        assert response.status_code == 409
        whole = await http.patch(
            "/v1/profiles/crm_id/C-5", json={"identifiers": None}, headers=headers
        )
        assert whole.status_code == 422

    async def test_taking_another_profiles_identifier_is_409(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        await http.put("/v1/profiles/crm_id/C-5", json={}, headers=headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-5",
            json={"identifiers": {"email": "jane@example.com"}},
            headers=headers,
        )
        assert response.status_code == 409
        assert "email" in response.json()["detail"]

    async def test_sets_only_the_event_metrics_it_names(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001",
            json={"metrics": {"order_count": 20, "visits": None}},
            headers=headers,
        )
        assert response.json()["metrics"] == {"order_count": 20, "lifetime_value": 1830.5}

    async def test_unknown_profile_is_404(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.patch(
            "/v1/profiles/crm_id/none", json={"traits": {}}, headers={**headers, **MERGE}
        )
        assert response.status_code == 404

    async def test_invalid_result_is_422_and_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001",
            json={"segments": "vip", "colour": "red"},
            headers=headers,
        )
        assert response.status_code == 422
        assert "segments" in response.text
        assert "colour" in response.text
        body = (await http.get("/v1/profiles/crm_id/C-1001", headers=headers)).json()
        assert body["segments"] == ["high_value"]
        assert body["version"] == 1

    async def test_removing_a_member_profiles_do_not_have_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001", json={"": None, "colour": None}, headers=headers
        )
        assert response.status_code == 422
        assert [error["loc"] for error in response.json()["detail"]] == [
            ["body", ""],
            ["body", "colour"],
        ]
        body = (await http.get("/v1/profiles/crm_id/C-1001", headers=headers)).json()
        assert body["version"] == 1

    async def test_other_media_types_are_415(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001",
            content=b"traits=1",
            headers={**headers, "content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 415


class TestDeleteProfile:
    async def test_erases_profile_identifiers_and_events(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        event = {"event_id": "e-1", "type": "view", "identifiers": {"crm_id": "C-1001"}}
        assert (await http.post("/v1/events", json=event, headers=headers)).status_code == 202
        response = await http.delete("/v1/profiles/email/jane@example.com", headers=headers)
        assert response.status_code == 204
        for path in ("crm_id/C-1001", "email/jane@example.com"):
            gone = await http.get(f"/v1/profiles/{path}", headers=headers)
            assert gone.status_code == 404
        # The identifiers are free again: a new profile can take them.
        again = await http.put("/v1/profiles/crm_id/C-1001", json={}, headers=headers)
        assert again.status_code == 201

    async def test_unknown_profile_is_404(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.delete("/v1/profiles/crm_id/none", headers=headers)
        assert response.status_code == 404


class TestWritesAreVisibleEverywhere:
    async def test_every_write_is_seen_by_the_next_read_on_another_instance(
        self, app_factory: AppFactory, running: RunningApp, headers: dict[str, str]
    ) -> None:
        # Another worker process. Without Redis (the embedded default) several workers cannot
        # tell each other of writes, so they run without L1: `workers=2` is that setting.
        other = await app_factory(workers=2)
        http = running.http

        async def enrich() -> dict[str, object]:
            response = await other.http.post(
                "/v1/enrich", json={"identifiers": {"crm_id": "C-1001"}}, headers=headers
            )
            body: dict[str, object] = response.json()
            return body

        assert (await enrich())["found"] is False
        await put_jane(http, headers)
        assert (await enrich())["traits"] == JANE["traits"]
        await http.patch(
            "/v1/profiles/crm_id/C-1001", json={"traits": {"tier": "silver"}}, headers=headers
        )
        assert (await enrich())["traits"] == {"first_name": "Jane", "tier": "silver"}
        event = {
            "event_id": "p-1",
            "type": "purchase",
            "identifiers": {"crm_id": "C-1001"},
            "data": {"amount": 5},
        }
        await http.post("/v1/events", json=event, headers=headers)
        metrics = (await enrich())["metrics"]
        assert isinstance(metrics, dict)
        assert metrics["order_count"] == 15
        await http.delete("/v1/profiles/crm_id/C-1001", headers=headers)
        assert (await enrich())["found"] is False


class TestConcurrentWrites:
    async def test_concurrent_creates_of_one_identity_make_one_profile(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        document = {"identifiers": {"email": "race@example.com"}, "traits": {"n": 1}}
        responses = await asyncio.gather(
            *(
                http.put(f"/v1/profiles/guest_ref/g-{i}", json=document, headers=headers)
                for i in range(20)
            )
        )
        assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
        assert len({r.json()["profile_id"] for r in responses}) == 1
        body = (await http.get("/v1/profiles/email/race@example.com", headers=headers)).json()
        assert len(body["identifiers"]["guest_ref"]) == 20

    async def test_patches_do_not_lose_concurrent_purchases(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        purchases = (
            http.post(
                "/v1/events",
                json={
                    "event_id": f"p-{i}",
                    "type": "purchase",
                    "identifiers": {"crm_id": "C-1001"},
                    "data": {"amount": "1.50"},
                },
                headers=headers,
            )
            for i in range(20)
        )
        patches = (
            http.patch("/v1/profiles/crm_id/C-1001", json={"traits": {"n": i}}, headers=headers)
            for i in range(10)
        )
        puts = (
            http.put("/v1/profiles/crm_id/C-1001", json={**JANE, "metrics": {}}, headers=headers)
            for _ in range(5)
        )
        responses = await asyncio.gather(*purchases, *patches, *puts)
        assert all(r.status_code in (200, 202) for r in responses), [
            r.text for r in responses if r.status_code not in (200, 202)
        ]
        metrics = (await http.get("/v1/profiles/crm_id/C-1001", headers=headers)).json()["metrics"]
        assert metrics["order_count"] == 14 + 20
        assert metrics["lifetime_value"] == 1830.5 + 30.0
