"""`enrich views create|list|show|retire` and `enrich clients view` as an operator runs them,
against the running app on the same database: what they print, what the app then answers,
and the audit entries they leave."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Backend, RunningApp
from tests.fixtures.callers import ENRICH, fetch_token, make_client_on
from tests.fixtures.commands import enrich, ok
from tests.fixtures.polling import eventually

NOBODY = {"identifiers": {"email": "nobody@example.com"}}


class TestViewCommands:
    async def test_create_list_show_retire(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        made = json.loads(
            await ok(
                backend,
                tmp_path,
                *("views", "create", "web_offer", "--fields", "traits.tier,segments"),
                *("--rename", "traits.tier=tier", "--default", "traits.tier=standard", "--json"),
            )
        )
        assert made["view"] == "web_offer@1"
        assert made["rename"] == {"traits.tier": "tier"}
        assert made["defaults"] == {"traits.tier": "standard"}
        second = await ok(
            backend, tmp_path, "views", "create", "web_offer", "--fields", "metrics.order_count"
        )
        assert "web_offer@2 created" in second

        header, *lines = (await ok(backend, tmp_path, "views", "list")).splitlines()
        assert header.split("\t")[:3] == ["view", "state", "fields"]
        assert [line.split("\t")[:3] for line in lines] == [
            ["web_offer@1", "live", "traits.tier,segments"],
            ["web_offer@2", "live", "metrics.order_count"],
        ]
        shown = json.loads(await ok(backend, tmp_path, "views", "show", "web_offer"))
        assert shown["view"] == "web_offer@2"

        token = await fetch_token(running.http, await make_client_on(running, "profiles:read"))
        headers = {"Authorization": f"Bearer {token}"}

        async def status(view: str) -> int:
            body = {**NOBODY, "view": view}
            return (await running.http.post(ENRICH, json=body, headers=headers)).status_code

        await eventually(lambda: ("web_offer", 2) in running.runtime.views.versions)
        assert await status("web_offer@1") == 200
        answer = await running.http.post(
            ENRICH, json={**NOBODY, "view": "web_offer@1"}, headers=headers
        )
        assert answer.json()["tier"] == "standard"

        assert "retired web_offer@1" in await ok(
            backend, tmp_path, "views", "retire", "web_offer@1"
        )
        await eventually(lambda: ("web_offer", 1) not in running.runtime.views.versions)
        assert await status("web_offer@1") == 410
        assert await status("web_offer") == 200
        everything = json.loads(await ok(backend, tmp_path, "views", "list", "--all", "--json"))
        assert [(row["view"], row["state"]) for row in everything] == [
            ("web_offer@1", "retired"),
            ("web_offer@2", "live"),
        ]
        audit = await ok(backend, tmp_path, "audit", "--json")
        actions = [json.loads(line)["action"] for line in audit.splitlines()]
        assert actions.count("view.created") == 2
        assert "view.retired" in actions

    async def test_a_bad_view_is_refused_saying_why(self, backend: Backend, tmp_path: Path) -> None:
        result = await enrich(
            backend, tmp_path, "views", "create", "offer", "--fields", "traits.a",
            "--rename", "traits.a=found",
        )  # fmt: skip
        assert result.returncode == 1
        assert "rename to 'found'" in result.stderr + result.stdout
        missing = await enrich(backend, tmp_path, "views", "retire", "nothing")
        assert missing.returncode == 1
        assert "no view nothing" in missing.stderr + missing.stdout

    async def test_a_clients_default_view(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        await ok(backend, tmp_path, "views", "create", "offer", "--fields", "segments")
        client = await make_client_on(running, "profiles:read")
        assert "default view offer@1" in await ok(
            backend, tmp_path, "clients", "view", client.client_id, "offer@1"
        )
        assert "default view offer@1" in await ok(
            backend, tmp_path, "clients", "view", client.client_id
        )
        await eventually(lambda: client.client_id in running.runtime.views.defaults)
        headers = {"Authorization": f"Bearer {await fetch_token(running.http, client)}"}
        answer = await running.http.post(ENRICH, json=NOBODY, headers=headers)
        assert list(answer.json()) == [
            "found", "matched", "profile_id", "segments", "updated_at", "stale"
        ]  # fmt: skip
        assert "default view none" in await ok(
            backend, tmp_path, "clients", "view", client.client_id, "--clear"
        )
        await eventually(lambda: client.client_id not in running.runtime.views.defaults)
        assert "traits" in (await running.http.post(ENRICH, json=NOBODY, headers=headers)).json()
        retired = await enrich(backend, tmp_path, "clients", "view", client.client_id, "nothing")
        assert retired.returncode == 1


JANE = {
    "identifiers": {"email": "jane@example.com"},
    "traits": {"tier": "gold"},
    "consent": {"marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z"}},
}


class TestConsentCommands:
    async def test_a_clients_purpose_and_a_views_purpose(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        writer = await make_client_on(running, "profiles:read profiles:write")
        headers = {"Authorization": f"Bearer {await fetch_token(running.http, writer)}"}
        stored = await running.http.put(
            "/v1/profiles/email/jane@example.com", json=JANE, headers=headers
        )
        assert stored.is_success, stored.text
        jane = {"identifiers": {"email": "jane@example.com"}}
        assert "default purpose marketing" in await ok(
            backend, tmp_path, "clients", "purpose", writer.client_id, "Marketing"
        )
        assert "default purpose marketing" in await ok(
            backend, tmp_path, "clients", "purpose", writer.client_id
        )
        await eventually(lambda: writer.client_id in running.runtime.views.purposes)
        refused = (await running.http.post(ENRICH, json=jane, headers=headers)).json()
        assert refused["consent"] == {"purpose": "marketing", "status": "denied"}

        made = json.loads(
            await ok(
                backend, tmp_path,
                *("views", "create", "stats", "--fields", "traits.tier"),
                *("--purpose", "analytics", "--json"),
            )
        )  # fmt: skip
        assert made["purpose"] == "analytics"
        await eventually(lambda: ("stats", 1) in running.runtime.views.versions)
        shown = await running.http.post(ENRICH, json={**jane, "view": "stats"}, headers=headers)
        assert shown.json()["traits"] == {"tier": "gold"}  # the view's purpose wins

        unknown = await enrich(backend, tmp_path, "clients", "purpose", writer.client_id, "ads")
        assert unknown.returncode == 1
        assert "unknown consent purpose 'ads'" in unknown.stderr + unknown.stdout
        assert "default purpose none" in await ok(
            backend, tmp_path, "clients", "purpose", writer.client_id, "--clear"
        )
        await eventually(lambda: writer.client_id not in running.runtime.views.purposes)
        assert "consent" not in (await running.http.post(ENRICH, json=jane, headers=headers)).json()
        audit = await ok(backend, tmp_path, "audit", "--json")
        assert "client.purpose_set" in audit
