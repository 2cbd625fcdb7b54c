"""OAuth clients, token signing keys and revoked tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models.base import Base, BigIntPK, JSONType, utcnow


class Client(Base):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # "sha256$<hex>": secrets are 256 random bits, so a fast hash is enough (no dictionary).
    secret_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(500))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Per-client rate limit (`enrich clients limit`); NULL: the settings' default, 0: none.
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, default=None)
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer, default=None)
    # Space-separated address ranges the client may call from (`enrich clients allow`);
    # NULL: anywhere.
    allowed_networks: Mapped[str | None] = mapped_column(Text, default=None)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_pem: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Set when a newer key takes over; the key still verifies for one token lifetime after.
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    # A growing sequence lets every worker fetch "what is new since last time" cheaply.
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    # No foreign key: a revocation lasts until its token expires, whatever becomes of the
    # client (a cascade let a deleted client's revoked tokens work again under its id).
    client_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_revoked_tokens_client_id", "client_id"),)
