"""Signing key rotation: old tokens keep working, new ones carry the new kid, everywhere."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from app.auth.signing_keys import KeyService
from app.core.models import SigningKey
from tests.auth.conftest import PROBE_READ, mount_probe, sign, valid_claims
from tests.conftest import AppFactory, Backend, ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import bearer, fetch_token, introspect, make_client_on, revoke
from tests.fixtures.polling import eventually
from tests.fixtures.service import ENRICH, service_env


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def rotate(app: RunningApp) -> str:
    """What `enrich keys rotate` does."""
    settings = app.runtime.settings
    async with app.runtime.sessionmaker() as session:
        kid = await KeyService(session).rotate(
            settings.signing_algorithm, settings.token_ttl_seconds
        )
        await session.commit()
    return kid


async def jwks_kids(app: RunningApp) -> set[str]:
    return {k["kid"] for k in (await app.http.get("/.well-known/jwks.json")).json()["keys"]}


async def started(app_factory: AppFactory, **overrides: object) -> RunningApp:
    app = await app_factory(**overrides)
    mount_probe(app.app)
    return app


async def new_kid_token(app: RunningApp, client: OAuthClient, kid: str) -> str:
    """Fetch tokens from ``app`` until it signs with ``kid`` (it polls the keys)."""
    tokens: list[str] = []

    async def signs_with_new_key() -> bool:
        tokens.append(await fetch_token(app.http, client))
        return kid_of(tokens[-1]) == kid

    await eventually(signs_with_new_key, "a token signed with the new key", interval=0.1)
    return tokens[-1]


class TestKeyRotation:
    async def test_rotation_keeps_old_tokens_and_signs_new_ones_with_the_new_key(
        self, app_factory: AppFactory
    ) -> None:
        # "issuer" reloads its keys every 0.5 s; "lagging" would wait an hour, so it
        # only learns the new key when a token names it.
        issuer = await started(app_factory, key_refresh_seconds=0.5)
        lagging = await started(app_factory, key_refresh_seconds=3600)
        client = await make_client_on(issuer, "profiles:read")
        old_token = await fetch_token(issuer.http, client)
        old_kid = kid_of(old_token)
        assert (await lagging.http.get(PROBE_READ, headers=bearer(old_token))).status_code == 200

        new_kid = await rotate(issuer)
        assert new_kid != old_kid
        new_token = await new_kid_token(issuer, client, new_kid)

        assert await jwks_kids(issuer) >= {old_kid, new_kid}
        for app in (issuer, lagging):
            for token in (old_token, new_token):
                response = await app.http.get(PROBE_READ, headers=bearer(token))
                assert response.status_code == 200, (app is issuer, kid_of(token))
        assert await jwks_kids(lagging) >= {old_kid, new_kid}
        # an instance started after the rotation verifies the old key's tokens from scratch
        late = await started(app_factory)
        assert (await late.http.get(PROBE_READ, headers=bearer(old_token))).status_code == 200
        assert (await late.http.get(PROBE_READ, headers=bearer(new_token))).status_code == 200

    async def test_an_instance_that_just_loaded_its_keys_still_accepts_a_new_kid(
        self, app_factory: AppFactory
    ) -> None:
        lagging = await started(app_factory, key_refresh_seconds=3600)
        old_kid = lagging.runtime.keyring.active_kid
        assert old_kid is not None  # it loaded its keys just now, at startup
        new_kid = await rotate(lagging)
        issuer = await started(app_factory)  # starts with the new key
        client = await make_client_on(issuer, "profiles:read")
        token = await fetch_token(issuer.http, client)
        assert kid_of(token) == new_kid
        assert (await lagging.http.get(PROBE_READ, headers=bearer(token))).status_code == 200

    async def test_revocation_and_introspection_know_a_key_not_yet_polled(
        self, app_factory: AppFactory
    ) -> None:
        lagging = await started(app_factory, key_refresh_seconds=3600)
        new_kid = await rotate(lagging)
        issuer = await started(app_factory)
        client = await make_client_on(issuer, "profiles:read")
        token = await fetch_token(issuer.http, client)
        assert kid_of(token) == new_kid
        answer = (await introspect(lagging.http, client, token)).json()
        assert answer["active"] is True
        assert (await revoke(lagging.http, client, token)).status_code == 200
        assert (await lagging.http.get(PROBE_READ, headers=bearer(token))).status_code == 401

    async def test_unknown_kids_cost_few_key_loads(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        sync = probe.runtime.auth_sync
        loads = 0
        original = sync._load_keys

        async def counting(session: object) -> None:
            nonlocal loads
            loads += 1
            await original(session)  # type: ignore[arg-type]

        sync._load_keys = counting  # type: ignore[method-assign]
        claims = valid_claims(probe, client.client_id)
        tokens = [sign(probe, claims, kid=f"made-up-{i}") for i in range(30)]
        answers = await asyncio.gather(
            *(probe.http.get(PROBE_READ, headers=bearer(t)) for t in tokens)
        )
        assert {a.status_code for a in answers} == {401}
        assert loads <= 2

    async def test_the_cli_rotates_the_key(
        self, backend: Backend, probe: RunningApp, make_client: ClientMaker, tmp_path: Path
    ) -> None:
        client = await make_client("profiles:read")
        old_token = await fetch_token(probe.http, client)
        env = service_env({"ENRICH_DATABASE_URL": backend.database_url})
        result = await asyncio.to_thread(
            subprocess.run,
            [str(ENRICH), "keys", "rotate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        async with probe.runtime.sessionmaker() as session:
            active = list(
                await session.scalars(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)))
            )
        assert len(active) == 1
        assert active[0] in result.stdout
        assert active[0] != kid_of(old_token)
        await probe.runtime.auth_sync.reload_keys()
        assert kid_of(await fetch_token(probe.http, client)) == active[0]
        assert (await probe.http.get(PROBE_READ, headers=bearer(old_token))).status_code == 200


@pytest.fixture
def clock_east_of_utc() -> Iterator[None]:
    """Run with the local time zone at UTC+9 (SQLite hands back naive UTC datetimes)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


class TestKeyTimesAreUtc:
    async def test_a_retired_key_still_verifies_whatever_the_local_time_zone(
        self, clock_east_of_utc: None, app_factory: AppFactory
    ) -> None:
        first = await started(app_factory)
        client = await make_client_on(first, "profiles:read")
        old_token = await fetch_token(first.http, client)
        await rotate(first)
        late = await started(app_factory)  # loads the retired key from the database
        assert (await late.http.get(PROBE_READ, headers=bearer(old_token))).status_code == 200
