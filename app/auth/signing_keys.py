"""The token signing keys: the first one made at start-up, rotation, loading into a key ring."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import log as audit
from app.audit.log import AuditLog
from app.auth.repository import KeyRepository
from app.auth.tokens import KeyRing, new_signing_key
from app.core.models.base import utcnow


class KeyService:
    def __init__(self, session: AsyncSession, actor: str | None = None) -> None:
        self.keys = KeyRepository(session)
        self.audit = AuditLog(session, actor)

    async def ensure_active(self, algorithm: str) -> None:
        """Create the first signing key on first start."""
        rows = await self.keys.all()
        if not any(row.retired_at is None for row in rows):
            await self.keys.add_active(new_signing_key(algorithm), retire_others=False)

    async def rotate(self, algorithm: str, token_ttl: int) -> str:
        """Make a new key active; keys retired over two lifetimes ago are dropped."""
        key = new_signing_key(algorithm)
        await self.keys.add_active(key, retire_others=True)
        await self.keys.delete_retired_before(utcnow() - timedelta(seconds=2 * token_ttl + 600))
        await self.audit.record(audit.KEY_ROTATED, key.kid, algorithm=algorithm)
        return key.kid

    async def load_into(self, keyring: KeyRing) -> None:
        keyring.load(await self.keys.all())
