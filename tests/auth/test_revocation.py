"""Revocation (RFC 7009) and disabled clients: refused at once here, within 1 s elsewhere.

"Elsewhere" learns it from its background poll of the database. The tests of that wait for the
refusal with a deadline that only guards against a hang, and report the time it took; what
bounds it is the poll's period, at most a second (``TestThePoll``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import delete as sa_delete
from sqlalchemy import select
from starlette.types import ASGIApp, Message

from app.auth import sync as sync_module
from app.auth.clients import ClientService
from app.auth.repository import ClientRepository
from app.auth.tokens import RevocationView
from app.core.models import Client, RevokedToken
from app.core.settings import Settings
from tests.auth.conftest import PROBE_READ, mount_probe
from tests.conftest import AppFactory, ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import basic, bearer, fetch_token, request_token, revoke
from tests.fixtures.polling import eventually
from tests.fixtures.service import RecordProperty


async def call_asgi(
    app: ASGIApp,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """POST straight into the ASGI app, watching what it sends and when."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.sleep(10)  # the client stays connected while the app works
        return {"type": "http.disconnect"}

    await app(scope, receive, send)


async def status(app: RunningApp, token: str) -> int:
    return (await app.http.get(PROBE_READ, headers=bearer(token))).status_code


async def refused_by(app: RunningApp, token: str) -> float:
    """Wait until ``app`` refuses ``token`` (its poll brings the change); return the seconds."""

    async def refused() -> bool:
        return await status(app, token) == 401

    return await eventually(refused, "the token refused by the other instance")


class TestRevocation:
    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_revoked_token_is_refused_at_once_on_the_same_instance(
        self, probe: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert await status(probe, token) == 200
        response = await revoke(probe.http, client, token, method)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        answer = await probe.http.get(PROBE_READ, headers=bearer(token))
        assert answer.status_code == 401
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]

    async def test_revocation_is_committed_before_the_answer_starts(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        seen_at_start: list[list[str]] = []

        async def revoked_rows() -> list[str]:
            async with probe.runtime.sessionmaker() as session:
                return list(await session.scalars(select(RevokedToken.client_id)))

        async def send(message: Message) -> None:
            # the moment the first response byte would leave the server
            if message["type"] == "http.response.start":
                seen_at_start.append(await revoked_rows())

        body = urlencode({"token": token}).encode()
        await call_asgi(
            probe.app,
            "/oauth/revoke",
            body,
            [
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"authorization", basic(client.client_id, client.client_secret).encode()),
            ],
            send,
        )
        assert seen_at_start == [[client.client_id]]

    async def test_revoked_token_is_refused_by_another_instance_after_its_poll(
        self,
        probe: RunningApp,
        app_factory: AppFactory,
        make_client: ClientMaker,
        record_property: RecordProperty,
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert await status(other, token) == 200  # verified and cached over there
        assert (await revoke(probe.http, client, token)).status_code == 200
        record_property("refused_after_s", round(await refused_by(other, token), 3))
        await other.runtime.auth_sync.refresh()  # and a later poll does not bring it back
        assert await status(other, token) == 401
        assert await status(probe, token) == 401

    @pytest.mark.parametrize(
        "token", ["garbage", "abc.def.ghi", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000]
    )
    async def test_unknown_tokens_answer_200(
        self, http: httpx.AsyncClient, make_client: ClientMaker, token: str
    ) -> None:
        client = await make_client()
        assert (await revoke(http, client, token)).status_code == 200

    async def test_revoking_twice_answers_200(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert (await revoke(probe.http, client, token)).status_code == 200
        assert (await revoke(probe.http, client, token)).status_code == 200
        assert await status(probe, token) == 401

    async def test_a_client_cannot_revoke_another_clients_token(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        owner = await make_client("profiles:read")
        stranger = await make_client("profiles:read profiles:write")
        token = await fetch_token(probe.http, owner)
        assert (await revoke(probe.http, stranger, token)).status_code == 200
        assert await status(probe, token) == 200
        await probe.runtime.auth_sync.refresh()  # what the next poll would bring
        assert await status(probe, token) == 200

    async def test_an_admin_can_revoke_any_token(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        owner = await make_client("profiles:read")
        admin = await make_client("admin")
        token = await fetch_token(probe.http, owner)
        assert (await revoke(probe.http, admin, token)).status_code == 200
        assert await status(probe, token) == 401

    async def test_revocation_requires_client_authentication(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        anonymous = await probe.http.post("/oauth/revoke", data={"token": token})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "invalid_client"
        wrong = OAuthClient(client.client_id, "wrong", client.scopes)
        answer = await revoke(probe.http, wrong, token)
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert answer.headers["www-authenticate"].startswith("Basic ")
        assert await status(probe, token) == 200

    async def test_a_missing_token_parameter_is_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/revoke",
            data={"token_type_hint": "access_token"},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    async def test_revoking_one_token_leaves_the_clients_other_tokens_valid(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        first = await fetch_token(probe.http, client)
        second = await fetch_token(probe.http, client)
        assert (await revoke(probe.http, client, first)).status_code == 200
        await probe.runtime.auth_sync.refresh()
        assert await status(probe, first) == 401
        assert await status(probe, second) == 200

    async def test_a_new_instance_refuses_tokens_revoked_before_it_started(
        self, probe: RunningApp, app_factory: AppFactory, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert (await revoke(probe.http, client, token)).status_code == 200
        late = await app_factory()
        mount_probe(late.app)
        assert await status(late, token) == 401


class TestDisabledClient:
    async def test_disabled_clients_tokens_stop_working_everywhere_after_a_poll(
        self,
        probe: RunningApp,
        app_factory: AppFactory,
        make_client: ClientMaker,
        record_property: RecordProperty,
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        client = await make_client("profiles:read")
        bystander = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        kept = await fetch_token(probe.http, bystander)
        assert await status(probe, token) == 200
        assert await status(other, token) == 200
        async with probe.runtime.sessionmaker() as session:
            await ClientService(session).disable(client.client_id)
            await session.commit()
        record_property("refused_after_s", round(await refused_by(other, token), 3))
        # Each instance polls on its own: this one may be a poll behind the other.
        await refused_by(probe, token)
        assert await status(other, kept) == 200
        assert (await request_token(probe.http, client)).status_code == 401


async def delete_row(app: RunningApp, client_id: str) -> None:
    """Delete the client row as any SQL would (no disabling first, no service rules)."""
    async with app.runtime.sessionmaker() as session:
        await session.execute(sa_delete(Client).where(Client.client_id == client_id))
        await session.commit()


async def revocations_of(app: RunningApp, client_id: str) -> list[str]:
    async with app.runtime.sessionmaker() as session:
        query = select(RevokedToken.jti).where(RevokedToken.client_id == client_id)
        return list(await session.scalars(query))


class TestDeletedClient:
    async def test_a_revocation_outlives_its_client_and_a_restart(
        self, probe: RunningApp, app_factory: AppFactory, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read", client_id="crm-connector")
        token = await fetch_token(probe.http, client)
        assert (await revoke(probe.http, client, token)).status_code == 200
        await delete_row(probe, client.client_id)
        # The same id again (an operator re-creating "the CRM client"): the old revoked token
        # must not come back to life, on this instance or on one started afterwards.
        await make_client("profiles:read", client_id="crm-connector")
        restarted = await app_factory()
        mount_probe(restarted.app)
        assert await status(restarted, token) == 401
        await probe.runtime.auth_sync.refresh()
        assert await status(probe, token) == 401
        assert len(await revocations_of(probe, client.client_id)) == 1

    async def test_a_deleted_clients_token_is_refused_everywhere_after_a_poll(
        self,
        probe: RunningApp,
        app_factory: AppFactory,
        make_client: ClientMaker,
        record_property: RecordProperty,
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        client = await make_client("profiles:read")
        bystander = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        kept = await fetch_token(probe.http, bystander)
        assert await status(probe, token) == 200
        assert await status(other, token) == 200  # verified and cached over there
        await delete_row(probe, client.client_id)
        record_property("refused_after_s", round(await refused_by(other, token), 3))
        await refused_by(probe, token)
        await other.runtime.auth_sync.refresh()  # and a later poll does not bring it back
        assert await status(other, token) == 401
        assert await status(other, kept) == 200
        restarted = await app_factory()
        mount_probe(restarted.app)
        assert await status(restarted, token) == 401

    async def test_a_deleted_clients_token_is_refused_where_no_poll_has_seen_the_client(
        self, probe: RunningApp, app_factory: AppFactory, make_client: ClientMaker
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        await other.runtime.auth_sync.stop()  # it will not poll again: it never sees the client
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        await delete_row(probe, client.client_id)
        assert await status(other, token) == 401
        assert await status(other, token) == 401

    async def test_a_new_clients_first_token_works_at_once_where_no_poll_has_seen_it(
        self, probe: RunningApp, app_factory: AppFactory, make_client: ClientMaker
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        await other.runtime.auth_sync.stop()  # it will not poll again: it never sees the client
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert await status(other, token) == 200
        assert await status(other, token) == 200
        # and it is still refused there once disabled, after the poll that brings it
        async with probe.runtime.sessionmaker() as session:
            await ClientService(session).disable(client.client_id)
            await session.commit()
        await other.runtime.auth_sync.refresh()
        assert await status(other, token) == 401

    async def test_a_deleted_clients_tokens_ask_the_database_once_not_per_request(
        self,
        probe: RunningApp,
        app_factory: AppFactory,
        make_client: ClientMaker,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        await other.runtime.auth_sync.stop()
        client = await make_client("profiles:read")
        tokens = [await fetch_token(probe.http, client) for _ in range(3)]
        await delete_row(probe, client.client_id)
        asked: list[str] = []
        query = ClientRepository.disabled

        async def counting(repository: ClientRepository, client_id: str) -> bool | None:
            asked.append(client_id)
            return await query(repository, client_id)

        monkeypatch.setattr(ClientRepository, "disabled", counting)
        answers = await asyncio.gather(*(status(other, t) for t in tokens * 10))
        answers += [await status(other, t) for t in tokens * 10]
        assert set(answers) == {401}
        assert asked == [client.client_id]


class TestRevocationView:
    def test_a_poll_that_started_before_a_lookup_does_not_undo_it(self) -> None:
        view = RevocationView()
        view.load_clients({"old": False}, asked_at=1.0)
        view.learn("new", False, asked_at=3.0)  # made after the poll below read the table
        view.load_clients({"old": False}, asked_at=2.0)
        assert view.usable == {"old", "new"}
        view.load_clients({"old": False}, asked_at=4.0)  # a later poll knows better: gone
        assert view.usable == {"old"}
        assert "new" in view.refused

    def test_a_client_missing_from_a_poll_is_remembered_as_gone(self) -> None:
        view = RevocationView()
        view.load_clients({"a": False, "b": True}, asked_at=1.0)
        view.load_clients({}, asked_at=2.0)
        assert view.usable == frozenset()
        assert view.refused == {"a", "b"}
        view.load_clients({"a": False}, asked_at=3.0)  # the same id made again
        assert view.usable == {"a"}
        assert view.refused == {"b"}


class RecordingAsyncio:
    """``asyncio`` for app/auth/sync.py, with a ``sleep`` that notes how long the poll would
    wait and only yields (everything else is asyncio's)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class TestThePoll:
    """What bounds "within a second": every process reads revocations and clients from the
    database once per ``revocation_poll_seconds``, which cannot be set above a second."""

    def test_the_period_cannot_be_set_above_a_second(self) -> None:
        assert Settings(_env_file=None, revocation_poll_seconds=1.0).revocation_poll_seconds == 1
        with pytest.raises(ValidationError, match="revocation_poll_seconds"):
            Settings(_env_file=None, revocation_poll_seconds=1.01)

    async def test_a_poll_runs_once_per_period(
        self, running: RunningApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sync = running.runtime.auth_sync
        await sync.stop()
        recording = RecordingAsyncio()
        monkeypatch.setattr(sync_module, "asyncio", recording)
        polls: list[int] = []  # how many waits came before each poll
        poll = sync.refresh

        async def counting() -> None:
            polls.append(len(recording.waits))
            await poll()

        monkeypatch.setattr(sync, "refresh", counting)
        sync.start()
        await eventually(lambda: len(polls) >= 3, "three polls")
        await sync.stop()
        period = running.runtime.settings.revocation_poll_seconds
        assert period <= 1.0
        assert polls[:3] == [1, 2, 3]  # one wait before each poll
        assert recording.waits[:3] == [period] * 3
