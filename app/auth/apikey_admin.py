"""API-key administration (`enrich clients api-key`): create, list, rotate and revoke.

Every change is audited with the key's id, never the key. A key is shown once, when made.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.log import AuditLog
from app.auth.apikeys import generate_key, generate_key_id, key_digest
from app.auth.repository import ApiKeyRepository, ClientRepository
from app.core.errors import AppError, NotFoundError
from app.core.models import ApiKey, Client
from app.core.models.base import utcnow

API_KEY_CREATED = "api_key.created"
API_KEY_ROTATED = "api_key.rotated"
API_KEY_REVOKED = "api_key.revoked"
# The longest overlap a rotation may leave the old key (a week).
MAX_GRACE_SECONDS = 7 * 86_400


def key_state(key: ApiKey) -> str:
    """``active``, ``revoked``, or ``expiring`` / ``expired`` after a rotation with grace."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None:
        expires = key.expires_at
        if expires.tzinfo is None:  # (SQLite hands times back naive, in UTC)
            expires = expires.replace(tzinfo=utcnow().tzinfo)
        return "expiring" if expires > utcnow() else "expired"
    return "active"


class ApiKeyService:
    def __init__(self, session: AsyncSession, actor: str | None = None) -> None:
        self.keys = ApiKeyRepository(session)
        self.clients = ClientRepository(session)
        self.audit = AuditLog(session, actor)

    async def _usable_client(self, client_id: str) -> Client:
        client = await self.clients.get(client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id}")
        if client.disabled:
            raise AppError(f"client {client_id} is disabled")
        return client

    async def _new_key(self, client_id: str, name: str) -> tuple[ApiKey, str]:
        plain = generate_key()
        key = ApiKey(
            key_id=generate_key_id(),
            client_id=client_id,
            name=name,
            key_hash=key_digest(plain.encode()),
            created_at=utcnow(),
        )
        await self.keys.add(key)
        return key, plain

    async def create(self, client_id: str, name: str | None = None) -> tuple[ApiKey, str, Client]:
        """A new key for the client (which keeps its secret and other keys); shown once."""
        client = await self._usable_client(client_id)
        key, plain = await self._new_key(client.client_id, name or client.name)
        await self.audit.record(API_KEY_CREATED, client_id, key_id=key.key_id, name=key.name)
        return key, plain, client

    async def get(self, key_id: str) -> ApiKey:
        key = await self.keys.get(key_id)
        if key is None:
            raise NotFoundError(f"no API key {key_id}")
        return key

    async def list(self, client_id: str | None = None) -> list[ApiKey]:
        return await self.keys.listed(client_id)

    async def rotate(self, key_id: str, grace_seconds: int = 0) -> tuple[ApiKey, str, Client]:
        """A new key in place of ``key_id``; the old one is refused at once, or after
        ``grace_seconds`` (time to change the caller's configuration)."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise AppError(f"--grace must be between 0 and {MAX_GRACE_SECONDS} seconds")
        old = await self.get(key_id)
        if key_state(old) != "active":
            raise AppError(f"API key {key_id} is {key_state(old)}; create a new one instead")
        client = await self._usable_client(old.client_id)
        key, plain = await self._new_key(old.client_id, old.name)
        if grace_seconds:
            old.expires_at = utcnow() + timedelta(seconds=grace_seconds)
        else:
            old.revoked_at = utcnow()
        await self.audit.record(
            API_KEY_ROTATED, old.client_id, key_id=key.key_id, replaced=key_id, grace=grace_seconds
        )
        return key, plain, client

    async def revoke(self, key_id: str) -> ApiKey:
        """Refuse the key on every worker within a second; revoking twice changes nothing."""
        key = await self.get(key_id)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            await self.audit.record(API_KEY_REVOKED, key.client_id, key_id=key_id)
        return key
