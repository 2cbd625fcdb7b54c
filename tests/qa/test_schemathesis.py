"""Schemathesis against the live OpenAPI document, with OAuth, on PostgreSQL and Redis.

All default checks run, time-boxed (ENRICH_TEST_SCHEMATHESIS_SECONDS, 100 s by default):
examples, coverage, fuzzing and stateful phases. Two settings, both explained in docs/qa.md:
strings carry no NUL character (PostgreSQL cannot store one; the refusal is tested in
tests/profiles), and positive_data_acceptance lets an identifier value that is invalid for its
type be a 400 (see schemathesis_hooks.py). A third turns ignored_auth off: an operation takes
a token or an API key, and the check, given a token, counts a request without the key as
unauthenticated; tests/qa/test_documented_responses.py checks every protected operation
without credentials instead. A fourth replaces use_after_free with one that knows a profile has
many addresses (schemathesis_hooks.py).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.databases import (
    REDIS_URL,
    create_pg_database,
    drop_pg_database,
    flush_prefix_at,
)
from tests.qa.server import BIN, ROOT, LiveServer, live_server, require

SECONDS = int(os.environ.get("ENRICH_TEST_SCHEMATHESIS_SECONDS", "100"))
CONFIG = """\
[auth.dynamic.openapi.OAuth2]
path = "/oauth/token"
method = "post"
payload = {{ grant_type = "client_credentials", client_id = "{client_id}", \
client_secret = "{client_secret}" }}
payload_content_type = "application/x-www-form-urlencoded"
extract_selector = "/access_token"

[generation]
allow-x00 = false

[checks.positive_data_acceptance]
enabled = false

[checks.ignored_auth]
enabled = false

[checks.use_after_free]
enabled = false
"""


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The production stack: PostgreSQL and Redis, in a database and key prefix of its own."""
    database = asyncio.run(create_pg_database())
    prefix = f"enrich-qa-{uuid.uuid4().hex[:10]}:"
    workdir = tmp_path_factory.mktemp("schemathesis")
    try:
        with live_server(
            workdir,
            database,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            # The fuzzer sends thousands of wrong client credentials from one address on
            # purpose; the lockout would turn the rest of the run into 429s.
            auth_max_failures_per_address="1000000",
            auth_max_failures_per_client="1000000",
            # The schema allows query values whose percent-encoded form passes the protocol's
            # URL and head limits (12 bytes per 4-byte character): the fuzzer would meet the
            # 414/431 of app/platform/http.py, which tests/platform/test_http_limits.py tests.
            max_url_bytes="262144",
            max_header_bytes="262144",
        ) as server:
            yield server
    finally:
        asyncio.run(drop_pg_database(database))
        asyncio.run(flush_prefix_at(REDIS_URL, prefix))


class TestSchemathesis:
    def test_every_default_check_passes_against_the_live_openapi(
        self, pg_server: LiveServer, artifacts: Path
    ) -> None:
        config = pg_server.workdir / "schemathesis.toml"
        config.write_text(
            CONFIG.format(client_id=pg_server.client_id, client_secret=pg_server.client_secret)
        )
        report = pg_server.workdir / "schemathesis-report"
        st = require(BIN / "st", "pip install -e '.[dev]'")
        done = pg_server.run(
            "env",
            f"PYTHONPATH={ROOT}",
            "SCHEMATHESIS_HOOKS=tests.qa.schemathesis_hooks",
            str(st),
            "--config-file",
            str(config),
            "run",
            f"{pg_server.base_url}/openapi.json",
            "--max-time",
            str(SECONDS),
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            timeout=SECONDS + 120,
        )
        if done.returncode != 0:
            (artifacts / "schemathesis.txt").write_text(done.stdout + done.stderr)
            (artifacts / "schemathesis-server.log").write_text(pg_server.log.read_text())
        assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
        assert "Errored" not in done.stdout, done.stdout[-5000:]
