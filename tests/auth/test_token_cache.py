"""The verified-token tables: keyed by the token, bounded in bytes, and never grown by what a
caller pads a header with."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from app.auth.tokens import (
    MAX_AUTHORIZATION_BYTES,
    InvalidTokenError,
)
from tests.auth.conftest import PROBE_READ
from tests.conftest import ClientMaker, RunningApp
from tests.fixtures.callers import bearer, fetch_token
from tests.fixtures.tokens import issuer_for, verifier_for


class TestVerifiedTokens:
    def test_many_tokens_stay_within_the_byte_budget(self, running: RunningApp) -> None:
        budget = 1_048_576
        clients = [f"enr_{i:024d}" for i in range(1200)]
        verifier = verifier_for(running, budget, clients)
        issuer = issuer_for(running)
        tokens = [issuer.issue(client, ["profiles:read"])[0] for client in clients]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for token in tokens:
                verifier.verify(token)
                verifier.bearer(b"Bearer " + token.encode())
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert verifier._verified_bytes <= budget
        # The tokens themselves are the test's (counted by the verifier, not allocated by it).
        assert held < budget * 1.5, f"the verifier holds {held} bytes for a budget of {budget}"
        # The newest token is still remembered: no signature check for it.
        assert verifier.cached(tokens[-1]) is not None

    def test_a_padded_header_is_not_remembered(self, running: RunningApp) -> None:
        verifier = verifier_for(running, 64 * 1_048_576)
        token = issuer_for(running).issue("enr_padded", ["profiles:read"])[0]
        verifier.verify(token)
        for padding in range(1, 200):
            header = b"Bearer " + b" " * padding + token.encode()
            assert verifier.bearer(header) is not None  # the token is good, however sent
        assert verifier.bearer(b"Bearer " + token.encode()) is not None
        assert list(verifier._by_header) == [b"Bearer " + token.encode()]

    def test_a_header_longer_than_any_token_is_refused_at_once(self, running: RunningApp) -> None:
        verifier = verifier_for(running, 64 * 1_048_576)
        token = issuer_for(running).issue("enr_padded", ["profiles:read"])[0]
        verifier.verify(token)
        header = b"Bearer " + b" " * MAX_AUTHORIZATION_BYTES + token.encode()
        with pytest.raises(InvalidTokenError, match="malformed"):
            verifier.bearer(header)
        assert verifier._by_header == {}

    async def test_a_padded_header_to_a_protected_route_is_401(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        token = await fetch_token(probe.http, await make_client("profiles:read"))
        padded = {"Authorization": "Bearer " + " " * 100_000 + token}
        answer = await probe.http.get(PROBE_READ, headers=padded)
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
