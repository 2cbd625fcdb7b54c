"""The listing commands read through a pipe: whole values, and JSON on request."""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer

from app import cli
from tests.conftest import Backend, RunningApp
from tests.fixtures.commands import create_client, ok

# Long enough that an 80-column table would have to cut or fold it.
LONG_NAME = "crm-nightly-sync-for-the-european-storefronts-and-the-loyalty-programme"


def rows(output: str) -> list[list[str]]:
    """Tab-separated lines, after the header line."""
    lines = output.splitlines()
    assert lines, output
    return [line.split("\t") for line in lines[1:]]


class TestClientsList:
    async def test_through_a_pipe_every_value_is_whole_one_client_a_line(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        created = [await create_client(backend, tmp_path, LONG_NAME) for _ in range(2)]
        listed = await ok(backend, tmp_path, "clients", "list")
        assert "…" not in listed
        header = listed.splitlines()[0].split("\t")
        assert header[:3] == ["client_id", "name", "scopes"]
        found = {row[0]: row for row in rows(listed)}
        for client in created:
            # A script finds a client by its id with grep, and reads the columns with cut.
            line = next(line for line in listed.splitlines() if client["client_id"] in line)
            assert line.split("\t")[0] == client["client_id"]
            assert found[client["client_id"]][1] == LONG_NAME
            assert found[client["client_id"]][2] == "profiles:read"

    async def test_json_gives_whole_values(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        created = await create_client(backend, tmp_path, LONG_NAME)
        listed = json.loads(await ok(backend, tmp_path, "clients", "list", "--json"))
        mine = next(c for c in listed if c["client_id"] == created["client_id"])
        assert mine["name"] == LONG_NAME
        assert mine["scopes"] == ["profiles:read"]
        assert "client_secret" not in mine
        assert created["client_secret"] not in json.dumps(listed)


class TestAuditList:
    async def test_through_a_pipe_every_value_is_whole(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        created = await create_client(backend, tmp_path, LONG_NAME)
        client_id = created["client_id"]
        await ok(backend, tmp_path, "clients", "allow", client_id, "203.0.113.0/24")
        listed = await ok(backend, tmp_path, "audit")
        assert "…" not in listed
        assert listed.splitlines()[0].split("\t") == ["at", "actor", "action", "target", "details"]
        mine = [row for row in rows(listed) if row[3] == client_id]
        assert [row[2] for row in mine] == ["client.created", "client.allowlisted"]
        assert f"name={LONG_NAME}" in mine[0][4]
        assert "203.0.113.0/24" in mine[1][4]

    async def test_json_is_one_object_a_line_with_whole_values(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        created = await create_client(backend, tmp_path, LONG_NAME)
        listed = await ok(backend, tmp_path, "audit", "--json")
        entries = [json.loads(line) for line in listed.splitlines()]
        mine = next(e for e in entries if e["target"] == created["client_id"])
        assert mine["details"]["name"] == LONG_NAME


class TestEveryListingHasJson:
    def test_each_listing_command_has_a_json_option(self) -> None:
        group = typer.main.get_command(cli.app)
        listings = sorted(listing_commands(group))
        assert {"audit", "clients list"} <= set(listings)
        for name in listings:
            command = group
            for part in name.split():
                command = command.commands[part]  # type: ignore[attr-defined]
            options = {opt for param in command.params for opt in getattr(param, "opts", [])}
            assert "--json" in options, name


def listing_commands(group: click.Command, prefix: str = "") -> list[str]:
    """Commands that list things: every ``list`` subcommand, and ``audit``."""
    found = []
    for name, command in getattr(group, "commands", {}).items():
        if hasattr(command, "commands"):
            found += listing_commands(command, f"{prefix}{name} ")
        elif name in {"list", "audit"}:
            found.append(f"{prefix}{name}")
    return found
