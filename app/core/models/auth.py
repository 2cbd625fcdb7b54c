"""OAuth clients, their API keys, token signing keys and revoked tokens."""

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
    # How it authenticates at the token endpoint (RFC 8705, section 2): with its secret
    # ("client_secret": Basic or the form), or with its certificate alone, one that chains to
    # ENRICH_CLIENT_CA_CERTS and has this subject ("tls_client_auth", `tls_subject_dn` in
    # RFC 4514 form), or one of its registered self-signed ones ("self_signed_tls_client_auth",
    # `tls_thumbprints`: their space-separated x5t#S256).
    auth_method: Mapped[str] = mapped_column(
        String(40), default="client_secret", server_default="client_secret"
    )
    tls_subject_dn: Mapped[str | None] = mapped_column(Text, default=None)
    tls_thumbprints: Mapped[str | None] = mapped_column(Text, default=None)
    # The view its enrich requests get when they name neither `view` nor `fields`
    # (`enrich clients view`): "name" (the latest live version) or "name@version"; NULL: none.
    default_view: Mapped[str | None] = mapped_column(String(80), default=None)
    # The consent purpose of its enrich requests when the view names none (None: no check).
    default_purpose: Mapped[str | None] = mapped_column(String(32), default=None)

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


class ApiKey(Base):
    """A client's API key (`enrich clients api-key`): a static credential in a header.

    Only a SHA-256 of the key is stored (keys are 256 random bits: see docs/security.md).
    No foreign key to ``clients``: deleting a client deletes its keys in the same transaction
    (``ClientService.delete``), and a key whose client is gone or disabled is refused anyway.
    """

    __tablename__ = "api_keys"

    # A growing sequence: a change to the table changes its fingerprint (ApiKeyRepository).
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The public name of the key ("ak_" and 16 hex digits): what the CLI lists and revokes.
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set once by `revoke`: refused from then on.
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set once by `rotate --grace`: the replaced key works until then.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
