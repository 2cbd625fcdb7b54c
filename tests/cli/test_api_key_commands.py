"""`enrich clients api-key create|list|rotate|revoke` as an operator runs them, against the
running app on the same database: a key shown once works at once, and stops when revoked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Backend, RunningApp
from tests.fixtures.callers import ENRICH, GUEST
from tests.fixtures.commands import create_client, enrich, ok
from tests.fixtures.polling import eventually


async def new_key(backend: Backend, tmp_path: Path, client_id: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(
        await ok(backend, tmp_path, "clients", "api-key", "create", client_id, "--json")
    )
    return made


async def status_with(running: RunningApp, key: str) -> int:
    response = await running.http.post(ENRICH, json=GUEST, headers={"X-API-Key": key})
    return response.status_code


class TestApiKeyCommands:
    async def test_create_prints_the_key_once_and_it_works(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        made = await new_key(backend, tmp_path, client["client_id"])
        assert made["client_id"] == client["client_id"]
        assert made["scopes"] == ["profiles:read"]
        assert made["api_key"].startswith("ek_")
        assert await status_with(running, made["api_key"]) == 200

        listed = await ok(backend, tmp_path, "clients", "api-key", "list", "--json")
        assert made["api_key"] not in listed
        (row,) = [k for k in json.loads(listed) if k["key_id"] == made["key_id"]]
        assert row["client_id"] == client["client_id"]
        assert row["state"] == "active"

        people = await ok(backend, tmp_path, "clients", "api-key", "create", client["client_id"])
        assert "shown once" in people
        assert "X-API-Key" in people

    async def test_the_listing_through_a_pipe_is_whole_lines(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        made = await new_key(backend, tmp_path, client["client_id"])
        listed = await ok(backend, tmp_path, "clients", "api-key", "list", client["client_id"])
        header, *lines = listed.splitlines()
        assert header.split("\t")[:4] == ["key_id", "client_id", "name", "state"]
        assert [line.split("\t")[:2] for line in lines] == [[made["key_id"], client["client_id"]]]

    async def test_revoke_stops_the_key_within_the_poll(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        made = await new_key(backend, tmp_path, client["client_id"])
        assert await status_with(running, made["api_key"]) == 200
        revoked = json.loads(
            await ok(backend, tmp_path, "clients", "api-key", "revoke", made["key_id"], "--json")
        )
        assert revoked == {
            "key_id": made["key_id"],
            "client_id": client["client_id"],
            "revoked": True,
        }

        async def refused() -> bool:
            return await status_with(running, made["api_key"]) == 401

        await eventually(refused, "the revoked key is refused")
        listed = json.loads(await ok(backend, tmp_path, "clients", "api-key", "list", "--json"))
        assert [k["state"] for k in listed if k["key_id"] == made["key_id"]] == ["revoked"]

    async def test_rotate_gives_a_new_key_and_ends_the_old_one(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        old = await new_key(backend, tmp_path, client["client_id"])
        rotated = json.loads(
            await ok(backend, tmp_path, "clients", "api-key", "rotate", old["key_id"], "--json")
        )
        assert rotated["replaced"] == old["key_id"]
        assert rotated["api_key"] != old["api_key"]
        assert await status_with(running, rotated["api_key"]) == 200

        async def old_refused() -> bool:
            return await status_with(running, old["api_key"]) == 401

        await eventually(old_refused, "the replaced key is refused")
        again = await enrich(backend, tmp_path, "clients", "api-key", "rotate", old["key_id"])
        assert again.returncode == 1
        assert "revoked" in again.stderr

    async def test_rotate_with_grace_keeps_the_old_key_for_a_while(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        old = await new_key(backend, tmp_path, client["client_id"])
        command = ("clients", "api-key", "rotate", old["key_id"], "--grace", "3600", "--json")
        rotated = json.loads(await ok(backend, tmp_path, *command))
        await running.runtime.auth_sync.refresh()
        assert await status_with(running, old["api_key"]) == 200
        assert await status_with(running, rotated["api_key"]) == 200
        listed = json.loads(await ok(backend, tmp_path, "clients", "api-key", "list", "--json"))
        states = {k["key_id"]: k["state"] for k in listed}
        assert states == {old["key_id"]: "expiring", rotated["key_id"]: "active"}

    async def test_unknown_ids_and_disabled_clients_are_clear_errors(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        for args in (("create", "enr_nobody"), ("rotate", "ak_nothing"), ("revoke", "ak_none")):
            result = await enrich(backend, tmp_path, "clients", "api-key", *args)
            assert result.returncode == 1
            assert "no " in result.stderr
            assert "Traceback" not in result.stderr
        client = await create_client(backend, tmp_path, "personalize")
        await ok(backend, tmp_path, "clients", "disable", client["client_id"])
        result = await enrich(
            backend, tmp_path, "clients", "api-key", "create", client["client_id"]
        )
        assert result.returncode == 1
        assert "disabled" in result.stderr

    async def test_a_client_made_without_a_secret_has_keys_only(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        command = ("clients", "create", "--name", "n", "--scopes", "profiles:read")
        made = json.loads(await ok(backend, tmp_path, *command, "--no-secret", "--json"))
        assert made["client_secret"] is None
        key = await new_key(backend, tmp_path, made["client_id"])
        assert await status_with(running, key["api_key"]) == 200
        audit = await ok(backend, tmp_path, "audit", "--json")
        assert key["api_key"] not in audit
        assert "api_key.created" in audit
