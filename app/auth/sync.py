"""Keep each process's view of keys, revocations, clients and client policies fresh (and,
through ``riders``, what higher floors hang on the same poll: the enrich views).

A background task reads them from the database every ``revocation_poll_seconds`` (0.25 s by
default), so a revocation reaches every worker and replica within a second, with room to
spare on a busy machine, without costing the request path a round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.apikeys import ApiKeyAuth
from app.auth.guard import ClientPolicies
from app.auth.repository import ClientRepository, RevocationRepository
from app.auth.signing_keys import KeyService
from app.auth.tokens import KeyRing, RevocationView, epoch
from app.core.models.base import utcnow

log = structlog.get_logger(__name__)

# Loads asked for by requests (a token names a kid this process lacks) run at most this often,
# so tokens with made-up kids cannot turn into one database query each.
MIN_RELOAD_INTERVAL = 0.25
# How often a process deletes revocations of long-expired tokens, and how long past expiry
# they are kept: far longer than any transaction, so a purge never hides a new revocation
# from the fingerprint (see RevocationRepository.fingerprint).
PURGE_INTERVAL = 300.0
PURGE_AFTER = timedelta(hours=1)


class AuthStateSync:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        view: RevocationView,
        poll_seconds: float,
        key_refresh_seconds: float,
        policies: ClientPolicies | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.policies = policies
        self.keyring = keyring
        self.view = view
        self.poll_seconds = poll_seconds
        self.key_refresh_seconds = key_refresh_seconds
        self._fingerprint: tuple[int, int] | None = None
        # monotonic time at which the latest key load *started* (what it saw is at least
        # as new as the database at that moment)
        self._keys_loaded_at = float("-inf")
        self._last_on_demand = float("-inf")
        self._purged_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._key_lock = asyncio.Lock()
        self._client_lock = asyncio.Lock()
        view.resolver = self.resolve_client
        # API keys' revocations ride on the same poll (set by app.runtime).
        self.api_keys: ApiKeyAuth | None = None
        # What other floors keep fresh on the same poll, each in a session of its own
        # (app.runtime adds the enrich views); one that fails is logged, the rest go on.
        self.riders: list[Callable[[AsyncSession], Awaitable[None]]] = []

    async def refresh(self) -> None:
        """One poll: revocations, clients, limits and allowlists; keys when due."""
        async with self.sessionmaker() as session:
            revocations = RevocationRepository(session)
            fingerprint = await revocations.fingerprint()
            if fingerprint != self._fingerprint:
                rows = await revocations.unexpired()
                jtis = {jti: epoch(exp) for jti, exp in rows}
                # Keep what this process revoked itself but the database may not show yet.
                now = time.time()
                jtis.update({j: e for j, e in self.view.jtis.items() if j not in jtis and e > now})
                self.view.jtis = jtis
                self._fingerprint = fingerprint
            asked_at = time.monotonic()
            states = await ClientRepository(session).states()
            self.view.load_clients({row[0]: row[1] for row in states}, asked_at)
            if self.policies is not None:
                self.policies.load(
                    (c, rps, burst, nets)
                    for c, _, rps, burst, nets in states
                    if rps is not None or nets is not None
                )
            if self.api_keys is not None:
                await self.api_keys.refresh(session)
            if time.monotonic() - self._keys_loaded_at >= self.key_refresh_seconds:
                async with self._key_lock:
                    await self._load_keys(session)
            if time.monotonic() - self._purged_at >= PURGE_INTERVAL:
                self._purged_at = time.monotonic()
                await revocations.purge_expired(utcnow() - PURGE_AFTER)
                await session.commit()
        for rider in self.riders:
            # A transaction of its own: holding this poll's table locks while reading others
            # can deadlock with DDL that takes them in another order (a TRUNCATE in tests).
            try:
                async with self.sessionmaker() as session:
                    await rider(session)
            except Exception as exc:
                log.warning("auth_sync.rider_failed", error=type(exc).__name__)

    async def resolve_client(self, client_id: str) -> None:
        """Ask the database about a client the view has not heard of (one made since the poll).

        Concurrent callers share one question; a failed one leaves the client unknown, so its
        token is refused this time and the next one asks again.
        """
        async with self._client_lock:
            if client_id in self.view.usable or client_id in self.view.refused:
                return  # answered while this caller waited
            asked_at = time.monotonic()
            try:
                async with self.sessionmaker() as session:
                    disabled = await ClientRepository(session).disabled(client_id)
            except Exception as exc:
                log.warning("auth_sync.client_lookup_failed", error=type(exc).__name__)
                return
            self.view.learn(client_id, disabled, asked_at)

    async def reload_keys(self) -> None:
        """Load the keys now, unless a load that started after this call already did.

        Concurrent callers share one load; loads on demand run at most every
        ``MIN_RELOAD_INTERVAL`` seconds (a caller waits for its turn rather than being refused).
        """
        requested = time.monotonic()
        async with self._key_lock:
            if self._keys_loaded_at >= requested:
                return
            wait = self._last_on_demand + MIN_RELOAD_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_on_demand = time.monotonic()
            async with self.sessionmaker() as session:
                await self._load_keys(session)

    async def _load_keys(self, session: AsyncSession) -> None:
        # Callers hold _key_lock, so an older read never overwrites a newer one.
        started = time.monotonic()
        await KeyService(session).load_into(self.keyring)
        self._keys_loaded_at = started

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # keep polling through database outages
                log.warning("auth_sync.failed", error=type(exc).__name__)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="auth-state-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
