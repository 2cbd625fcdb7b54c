"""The demo data set: the same everywhere, realistic, with a fully filled test guest."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.ingest.demo import demo_documents, demo_guest, demo_profile, load_demo
from app.profiles.schemas import EVENT_METRICS, ProfileDocument
from app.profiles.service import ProfileService
from tests.conftest import Backend
from tests.fixtures.service import ENRICH, service_env
from tests.profiles.helpers import stored_profiles

Sessions = async_sessionmaker[AsyncSession]
DIGEST = (
    "import hashlib, orjson; from app.ingest.demo import demo_profile; "
    "print(hashlib.sha256(orjson.dumps([demo_profile(n) for n in range(200)])).hexdigest())"
)


def digest_in_process(seed: str) -> str:
    env = os.environ | {"PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", DIGEST], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class TestDemoData:
    def test_every_process_generates_the_same_profiles(self) -> None:
        here = hashlib.sha256(orjson.dumps([demo_profile(n) for n in range(200)])).hexdigest()

        assert digest_in_process("1") == here
        assert digest_in_process("2") == here

    def test_a_larger_set_keeps_the_smaller_one(self) -> None:
        assert list(demo_documents(100))[:52] == list(demo_documents(50))

    def test_profiles_look_like_customers(self) -> None:
        profiles = [demo_profile(n) for n in range(500)]

        emails = [p["identifiers"]["email"] for p in profiles]
        assert len(set(emails)) == 500
        assert all(re.fullmatch(r"[a-z]+\.[a-z]+\.\d+@example\.com", e) for e in emails)
        assert {p["traits"]["tier"] for p in profiles} == {"bronze", "silver", "gold", "platinum"}
        assert 0.5 < sum("phone" in p["identifiers"] for p in profiles) / 500 < 0.9
        for profile in profiles:
            ProfileDocument.model_validate(profile)
            recommendations = profile["recommendations"]
            assert 5 <= len(recommendations) <= 10
            assert all({"product_id", "name", "score"} <= set(r) for r in recommendations)
            scores = [r["score"] for r in recommendations]
            assert scores == sorted(scores, reverse=True)

    def test_the_test_guest_has_every_field(self) -> None:
        guest = demo_guest()
        generated = [demo_profile(n) for n in range(300)]

        assert guest["identifiers"] == {
            "email": "demo@example.com",
            "guest_ref": "demo-guest",
            "crm_id": "CRM-DEMO",
            "phone": "+14155550100",
        }
        for part in ("traits", "metrics"):
            every = set().union(*(p[part] for p in generated))
            assert every <= set(guest[part])
        assert set(EVENT_METRICS) <= set(guest["metrics"])
        assert all(value not in (None, "", []) for value in guest["traits"].values())
        assert len(guest["recommendations"]) == 8


class TestLoadDemo:
    async def test_loads_once_and_a_second_run_changes_nothing(
        self, backend: Backend, sessions: Sessions
    ) -> None:
        settings = backend.settings()
        async with sessions() as session:
            first = await load_demo(session, settings, 300)
            await session.commit()
        loaded = await stored_profiles(sessions)
        async with sessions() as session:
            second = await load_demo(session, settings, 300)
            await session.commit()

        assert first == second == 302
        assert len(loaded) == 302
        assert await stored_profiles(sessions) == loaded
        guest = next(p for name, p in loaded.items() if "email:demo@example.com" in name.split())
        assert guest["traits"]["tier"] == "platinum"
        assert guest["order_count"] == 42
        async with sessions() as session:
            optout = await ProfileService(session, "US").get(("email", "optout@example.com"))
        assert optout["consent"]["marketing"]["status"] == "denied"
        assert optout["consent"]["personalization"]["status"] == "granted"

    def test_the_command_prints_the_guest_and_a_client(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        env = service_env({"ENRICH_DATABASE_URL": backend.database_url})
        command = [str(ENRICH), "demo", "--profiles", "40"]

        first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

        assert first.returncode == 0, first.stderr
        assert "demo data: 42 profiles (test guest: demo@example.com;" in second.stdout
        client_line = [line for line in first.stdout.splitlines() if "client_id" in line]
        assert client_line
        assert client_line[0] in second.stdout  # the saved client is reused
        # The example view, once: a second run keeps its version (a Connection may pin it).
        assert "the example view web_offer@1" in first.stdout
        assert "the example view web_offer@1" in second.stdout
