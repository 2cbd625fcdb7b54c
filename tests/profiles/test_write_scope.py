"""What a write answers depends on whether the caller may read: a client with
``profiles:write`` but not ``profiles:read`` learns the profile's id and version, never its
contents (a ``PATCH {}`` must not be a read in disguise)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import TokenMaker
from tests.profiles.test_router import JANE, MERGE, put_jane

# Everything a write-only client must not see in an answer, taken from JANE.
SECRETS = ("Jane", "gold", "high_value", "SKU-1", "1830.5", "crm_id", "C-1001", "visits")
WRITTEN = {"profile_id", "version"}


@pytest.fixture
async def write_only(token_for: TokenMaker) -> dict[str, str]:
    token = await token_for("profiles:write")
    return {"Authorization": f"Bearer {token}"}


def reveals_nothing(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == WRITTEN, body
    for secret in SECRETS:
        assert secret not in response.text, secret
    return body


class TestWriteOnlyAnswers:
    async def test_put_answers_ids_and_version(
        self, http: httpx.AsyncClient, headers: dict[str, str], write_only: dict[str, str]
    ) -> None:
        created = await http.put("/v1/profiles/crm_id/C-1001", json=JANE, headers=write_only)
        assert created.status_code == 201
        assert created.headers["location"] == "/v1/profiles/crm_id/C-1001"
        body = reveals_nothing(created)
        assert body["version"] == 1
        # Another client's PUT by the email: 200, still nothing of the profile.
        replaced = await http.put(
            "/v1/profiles/email/jane@example.com", json={**JANE, "source": None}, headers=write_only
        )
        assert replaced.status_code == 200
        assert reveals_nothing(replaced) == {"profile_id": body["profile_id"], "version": 2}
        read = await http.get("/v1/profiles/crm_id/C-1001", headers=headers)
        assert read.json()["profile_id"] == body["profile_id"]
        assert read.json()["traits"] == JANE["traits"]

    async def test_an_empty_patch_is_not_a_read(
        self, http: httpx.AsyncClient, headers: dict[str, str], write_only: dict[str, str]
    ) -> None:
        profile = (await put_jane(http, headers)).json()
        response = await http.patch(
            "/v1/profiles/email/jane@example.com", content=b"{}", headers={**write_only, **MERGE}
        )
        assert response.status_code == 200
        assert reveals_nothing(response) == {"profile_id": profile["profile_id"], "version": 1}

    async def test_a_patch_answers_the_new_version_only(
        self, http: httpx.AsyncClient, headers: dict[str, str], write_only: dict[str, str]
    ) -> None:
        await put_jane(http, headers)
        response = await http.patch(
            "/v1/profiles/crm_id/C-1001", json={"traits": {"tier": "silver"}}, headers=write_only
        )
        assert response.status_code == 200
        assert reveals_nothing(response)["version"] == 2
        read = await http.get("/v1/profiles/crm_id/C-1001", headers=headers)
        assert read.json()["traits"] == {"first_name": "Jane", "tier": "silver"}

    async def test_bulk_outcomes_carry_no_contents(
        self, http: httpx.AsyncClient, write_only: dict[str, str]
    ) -> None:
        records = [JANE, {"identifiers": {"x": "Jane"}}, {"identifiers": {"phone": "Jane"}}]
        for statuses in (["created", "created", "failed"], ["unchanged", "unchanged", "failed"]):
            response = await http.post("/v1/profiles/bulk", json=records, headers=write_only)
            assert response.status_code == 200
            outcome = response.json()
            assert [r["status"] for r in outcome["results"]] == statuses
            for record in outcome["results"]:
                assert set(record) <= {"index", "status", "error"}
            for secret in ("gold", "high_value", "SKU-1", "1830.5", "C-1001"):
                assert secret not in response.text


class TestReadWriteAnswers:
    async def test_put_and_patch_answer_the_whole_profile(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        created = (await put_jane(http, headers)).json()
        assert created["traits"] == JANE["traits"]
        assert created["identifiers"]["crm_id"] == "C-1001"
        patched = await http.patch(
            "/v1/profiles/crm_id/C-1001", content=b"{}", headers={**headers, **MERGE}
        )
        assert patched.json() == created
