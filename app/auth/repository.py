"""Every SQL statement about clients, API keys, signing keys and revoked tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import ApiKey, Client, RevokedToken, SigningKey
from app.core.models.base import utcnow


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> Client | None:
        return await self.session.get(Client, client_id)

    async def add(self, client: Client) -> Client:
        self.session.add(client)
        await self.session.flush()
        return client

    async def all(self) -> list[Client]:
        result = await self.session.scalars(select(Client).order_by(Client.created_at))
        return list(result)

    async def delete(self, client: Client) -> None:
        await self.session.delete(client)
        await self.session.flush()

    async def states(self) -> list[tuple[str, bool, float | None, int | None, str | None]]:
        """What the request path needs of every client: whether it exists, is disabled,
        limited or allowlisted (a deployment has a handful of clients, not thousands)."""
        result = await self.session.execute(
            select(
                Client.client_id,
                Client.disabled,
                Client.rate_limit_rps,
                Client.rate_limit_burst,
                Client.allowed_networks,
            )
        )
        return [tuple(row) for row in result]  # type: ignore[misc]

    async def disabled(self, client_id: str) -> bool | None:
        """Whether the client is disabled; None when there is no such client."""
        result = await self.session.scalar(
            select(Client.disabled).where(Client.client_id == client_id)
        )
        return None if result is None else bool(result)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))

    async def listed(self, client_id: str | None = None) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.id)
        if client_id is not None:
            query = query.where(ApiKey.client_id == client_id)
        return list(await self.session.scalars(query))

    async def delete_for(self, client_id: str) -> None:
        await self.session.execute(delete(ApiKey).where(ApiKey.client_id == client_id))

    async def grant(self, digest: str) -> tuple[ApiKey, Client | None] | None:
        """The key with this digest and its client (None when the client is gone)."""
        row = (
            await self.session.execute(
                select(ApiKey, Client)
                .outerjoin(Client, Client.client_id == ApiKey.client_id)
                .where(ApiKey.key_hash == digest)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def fingerprint(self) -> tuple[int, int, int, int]:
        """Rows, sum of ids, revoked and expiring rows: any create, revoke, rotation or
        delete changes one of them (``revoked_at`` and ``expires_at`` are set once each)."""
        row = (
            await self.session.execute(
                select(
                    func.count(),
                    func.sum(ApiKey.id),
                    func.count(ApiKey.revoked_at),
                    func.count(ApiKey.expires_at),
                )
            )
        ).one()
        return int(row[0]), int(row[1] or 0), int(row[2]), int(row[3])


class KeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self) -> list[SigningKey]:
        result = await self.session.scalars(select(SigningKey).order_by(SigningKey.created_at))
        return list(result)

    async def add_active(self, key: SigningKey, *, retire_others: bool) -> None:
        """Store ``key``; when rotating, retire every key that was active until now."""
        if retire_others:
            await self.session.execute(
                update(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .values(retired_at=utcnow())
            )
        self.session.add(key)
        await self.session.flush()

    async def delete_retired_before(self, cutoff: datetime) -> None:
        await self.session.execute(delete(SigningKey).where(SigningKey.retired_at < cutoff))


class RevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, jti: str, client_id: str, expires_at: datetime) -> None:
        """Record a revocation; revoking a token twice is not an error."""
        values = {
            "jti": jti,
            "client_id": client_id,
            "expires_at": expires_at,
            "revoked_at": utcnow(),
        }
        bind = self.session.get_bind()
        insert = pg_insert if bind.dialect.name == "postgresql" else sqlite_insert
        await self.session.execute(
            insert(RevokedToken).values(**values).on_conflict_do_nothing(index_elements=["jti"])
        )

    async def fingerprint(self) -> tuple[int, int]:
        """Row count and sum of ids: any new revocation changes them.

        A new row raises the count; when a purge removes as many rows in the same poll
        interval, the sum still rises, because purged rows are hours old and so have lower
        ids than any row a live transaction can add (ids are not committed in order, so the
        highest id alone would miss a late commit).
        """
        row = (await self.session.execute(select(func.count(), func.sum(RevokedToken.id)))).one()
        return int(row[0]), int(row[1] or 0)

    async def unexpired(self) -> list[tuple[str, datetime]]:
        result = await self.session.execute(
            select(RevokedToken.jti, RevokedToken.expires_at).where(
                RevokedToken.expires_at > utcnow()
            )
        )
        return [(row.jti, row.expires_at) for row in result]

    async def purge_expired(self, before: datetime) -> None:
        """Forget revocations of tokens that expired before ``before``."""
        await self.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < before))
