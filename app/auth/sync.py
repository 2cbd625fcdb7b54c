"""Keep each process's view of keys, revocations and disabled clients fresh.

A background task reads them from the database every ``revocation_poll_seconds`` (0.5 s by
default), so a revocation reaches every worker and replica within a second without costing
the request path a round trip.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.repository import ClientRepository, RevocationRepository
from app.auth.service import KeyService
from app.auth.tokens import KeyRing, RevocationView

log = structlog.get_logger(__name__)


class AuthStateSync:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        view: RevocationView,
        poll_seconds: float,
        key_refresh_seconds: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.keyring = keyring
        self.view = view
        self.poll_seconds = poll_seconds
        self.key_refresh_seconds = key_refresh_seconds
        self._fingerprint: tuple[int, int] | None = None
        self._keys_loaded_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._key_lock = asyncio.Lock()

    async def refresh(self) -> None:
        """One poll: revocations and disabled clients, and the keys when they are due."""
        async with self.sessionmaker() as session:
            revocations = RevocationRepository(session)
            fingerprint = await revocations.fingerprint()
            if fingerprint != self._fingerprint:
                rows = await revocations.unexpired()
                jtis = {jti: exp.timestamp() for jti, exp in rows}
                # Keep what this process revoked itself but the database may not show yet.
                jtis.update(
                    {j: e for j, e in self.view.jtis.items() if j not in jtis and e > time.time()}
                )
                self.view.jtis = jtis
                self._fingerprint = fingerprint
            disabled = frozenset(await ClientRepository(session).disabled_ids())
            if disabled != self.view.disabled_clients:
                self.view.disabled_clients = disabled
            if time.monotonic() - self._keys_loaded_at >= self.key_refresh_seconds:
                await KeyService(session).load_into(self.keyring)
                self._keys_loaded_at = time.monotonic()

    async def reload_keys(self) -> None:
        """Load the keys now (a token named a key this process has not seen); at most 1/s."""
        async with self._key_lock:
            if time.monotonic() - self._keys_loaded_at < 1.0:
                return
            async with self.sessionmaker() as session:
                await KeyService(session).load_into(self.keyring)
            self._keys_loaded_at = time.monotonic()

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
