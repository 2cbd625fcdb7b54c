from __future__ import annotations

import httpx
import orjson

from tests.conftest import RunningApp

NDJSON = {"content-type": "application/x-ndjson"}


def ndjson(records: list[object]) -> bytes:
    return b"\n".join(orjson.dumps(record) for record in records) + b"\n"


class TestBulkUpsert:
    async def test_ndjson_records_each_get_an_outcome(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        body = (
            orjson.dumps({"identifiers": {"email": "a@example.com"}, "traits": {"n": 1}})
            + b"\n\n"
            + b"{not json\n"
            + orjson.dumps({"identifiers": {"crm_id": "C-2"}, "colour": "red"})
            + b"\n"
            + orjson.dumps({"identifiers": {"phone": "Jane"}})
            + b"\n"
            + orjson.dumps({"identifiers": {"crm_id": "C-3"}, "segments": ["x"]})
        )
        response = await http.post("/v1/profiles/bulk", content=body, headers={**headers, **NDJSON})
        assert response.status_code == 200, response.text
        outcome = response.json()
        assert (outcome["created"], outcome["updated"], outcome["failed"]) == (2, 0, 3)
        statuses = [(r["index"], r["status"]) for r in outcome["results"]]
        assert statuses == [
            (0, "created"),
            (1, "failed"),
            (2, "failed"),
            (3, "failed"),
            (4, "created"),
        ]
        errors = {r["index"]: r["error"] for r in outcome["results"] if "error" in r}
        assert "JSON" in errors[1]
        assert "colour" in errors[2]
        assert "phone" in errors[3]
        read = await http.get("/v1/profiles/crm_id/C-3", headers=headers)
        assert read.json()["segments"] == ["x"]

    async def test_json_array_is_idempotent(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        records = [
            {"identifiers": {"crm_id": f"C-{i}"}, "traits": {"i": i}, "metrics": {"visits": i}}
            for i in range(50)
        ]
        first = (await http.post("/v1/profiles/bulk", json=records, headers=headers)).json()
        assert first["created"] == 50
        again = (await http.post("/v1/profiles/bulk", json=records, headers=headers)).json()
        assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 50)
        records[7]["traits"] = {"i": 700}
        third = (await http.post("/v1/profiles/bulk", json=records, headers=headers)).json()
        assert (third["updated"], third["unchanged"]) == (1, 49)
        assert third["results"][7] == {"index": 7, "status": "updated"}

    async def test_a_bulk_write_is_visible_to_enrich(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        http = running.http
        query = {"identifiers": {"email": "b@example.com"}}
        before = await http.post("/v1/enrich", json=query, headers=headers)
        assert before.json()["found"] is False
        records = [{"identifiers": {"email": "b@example.com"}, "traits": {"tier": "gold"}}]
        await http.post("/v1/profiles/bulk", json=records, headers=headers)
        after = await http.post("/v1/enrich", json=query, headers=headers)
        assert after.json()["traits"] == {"tier": "gold"}

    async def test_over_the_record_limit_is_413(
        self, headers: dict[str, str], running: RunningApp
    ) -> None:
        records = [{"identifiers": {"crm_id": f"C-{i}"}} for i in range(10_001)]
        response = await running.http.post(
            "/v1/profiles/bulk", content=ndjson(records), headers={**headers, **NDJSON}
        )
        assert response.status_code == 413
        assert "10000" in response.json()["detail"]

    async def test_body_that_is_not_an_array_is_400(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post("/v1/profiles/bulk", json={"a": 1}, headers=headers)
        assert response.status_code == 400
        malformed = await http.post(
            "/v1/profiles/bulk",
            content=b"[{",
            headers={**headers, "content-type": "application/json"},
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"] == "invalid_json"

    async def test_a_body_without_records_is_400_and_an_empty_array_is_no_op(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        json_type = {"content-type": "application/json"}
        for content, kind in (
            (b"", json_type),
            (b" \r\n", json_type),
            (b"", NDJSON),
            (b"\n\n", NDJSON),
        ):
            refused = await http.post(
                "/v1/profiles/bulk", content=content, headers={**headers, **kind}
            )
            assert refused.status_code == 400, (content, kind, refused.text)
            assert refused.json()["error"] == "invalid_body"
        # Bytes that only Python calls whitespace (a form feed) are not JSON (schemathesis).
        garbage = await http.post(
            "/v1/profiles/bulk", content=b"\x0c", headers={**headers, **json_type}
        )
        assert garbage.status_code == 400
        assert garbage.json()["error"] == "invalid_json"
        line = await http.post(
            "/v1/profiles/bulk",
            content=b"\x0c\n" + orjson.dumps({"identifiers": {"crm_id": "C-9"}}) + b"\n",
            headers={**headers, **NDJSON},
        )
        assert [r["status"] for r in line.json()["results"]] == ["failed", "created"]
        empty = await http.post("/v1/profiles/bulk", json=[], headers=headers)
        assert empty.status_code == 200
        assert empty.json() == {
            "created": 0,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "results": [],
        }

    async def test_other_media_types_are_415(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/profiles/bulk",
            content=b"email\na@example.com\n",
            headers={**headers, "content-type": "text/csv"},
        )
        assert response.status_code == 415
