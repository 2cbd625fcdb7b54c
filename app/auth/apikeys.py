"""API keys: a client's static key in a header (``X-API-Key`` by default), checked per request.

The weaker option next to OAuth tokens (docs/security.md says why it exists anyway). A key is
``ek_`` and 256 random bits; only its SHA-256 is stored, and only that digest is remembered
here: a key verified once costs each later request a SHA-256 of some 46 bytes and a dictionary
lookup (``ApiKeyAuth.cached``, what the enrich fast path calls). A key not remembered costs one
indexed query (``ApiKeyAuth.authenticate``, the routes).

Revocation reaches every worker through the poll that brings revoked tokens and disabled
clients (``AuthStateSync``): any change to the keys' table changes its fingerprint, and a
worker that sees a new fingerprint forgets every key it verified (each is looked up again
once). A key is also refused as soon as its client is disabled or gone (``RevocationView``),
and when the grace of a rotation ends (checked on every request).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.repository import ApiKeyRepository
from app.auth.tokens import InvalidTokenError, Principal, RevocationView, epoch
from app.platform.sizes import DICT_SLOT_BYTES, footprint

KEY_PREFIX = "ek_"
# A key is 46 characters; a header value this long is not one and is not even hashed.
MAX_KEY_BYTES = 128
# The ``exp`` of a key's principal when the key has no end (it has none until revoked).
NO_EXPIRY = 2**62
INVALID = "the API key is not valid"


def generate_key() -> str:
    """``ek_`` and 256 random bits, URL-safe (nothing to escape in a header)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def generate_key_id() -> str:
    return "ak_" + secrets.token_hex(8)


def key_digest(key: bytes) -> str:
    """What is stored and remembered of a key: its SHA-256, in hex."""
    return hashlib.sha256(key).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A verified key: who it is, and until when (epoch; ``math.inf``: until revoked)."""

    principal: Principal
    until: float


class VerifiedKeys:
    """Verified keys by digest, bounded in bytes; ``generation`` counts the resets."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.generation = 0
        self._grants: dict[str, KeyGrant] = {}
        self._bytes = 0

    def get(self, digest: str) -> KeyGrant | None:
        return self._grants.get(digest)

    def put(self, digest: str, grant: KeyGrant, generation: int) -> None:
        """Remember ``grant`` unless a reset came since its lookup began (``generation``)."""
        if generation != self.generation:
            return  # the lookup may have read the key before its revocation
        cost = footprint(digest) + footprint(grant) + DICT_SLOT_BYTES
        if digest in self._grants:
            return
        if self._bytes + cost > self.max_bytes:
            self._grants.clear()  # live keys are looked up again, once each
            self._bytes = 0
        self._grants[digest] = grant
        self._bytes += cost

    def reset(self) -> None:
        self.generation += 1
        self._grants = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._grants)


class ApiKeyAuth:
    """Who an API key belongs to: from memory when verified before, else from the database."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clients: RevocationView,
        max_cached_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clients = clients
        self.verified = VerifiedKeys(max_cached_bytes)
        self.clock = clock
        self._fingerprint: tuple[int, int, int, int] | None = None

    def cached(self, key: bytes) -> Principal | None:
        """The hot path: a key verified before, not expired, of a usable client; else None."""
        if len(key) > MAX_KEY_BYTES:
            return None
        grant = self.verified.get(hashlib.sha256(key).hexdigest())
        if grant is None:
            return None
        principal = grant.principal
        if grant.until <= self.clock() or principal.client_id not in self.clients.usable:
            return None
        return principal

    async def authenticate(self, key: str) -> Principal:
        """The key's principal; InvalidTokenError for a key that is unknown, revoked or expired,
        or whose client is disabled or gone."""
        raw = key.encode("utf-8", "replace")
        if len(raw) > MAX_KEY_BYTES or not key.startswith(KEY_PREFIX):
            raise InvalidTokenError(INVALID)
        principal = self.cached(raw)
        if principal is not None:
            return principal
        digest = key_digest(raw)
        generation = self.verified.generation
        asked_at = time.monotonic()
        async with self.sessionmaker() as session:
            found = await ApiKeyRepository(session).grant(digest)
        if found is None:
            raise InvalidTokenError(INVALID)
        key_row, client = found
        if client is None or client.disabled:
            self.clients.learn(key_row.client_id, None if client is None else True, asked_at)
            raise InvalidTokenError(INVALID)
        until = epoch(key_row.expires_at) if key_row.expires_at is not None else math.inf
        if key_row.revoked_at is not None or until <= self.clock():
            raise InvalidTokenError(INVALID)
        self.clients.learn(client.client_id, False, asked_at)
        scopes = client.scope_set
        principal = Principal(
            client_id=client.client_id,
            scopes=scopes,
            jti=f"apikey:{key_row.key_id}",
            exp=NO_EXPIRY if until == math.inf else int(until),
            iat=int(epoch(key_row.created_at)),
            claims={"client_id": client.client_id, "api_key": key_row.key_id},
        )
        self.verified.put(digest, KeyGrant(principal, until), generation)
        return principal

    async def refresh(self, session: AsyncSession) -> None:
        """One poll (``AuthStateSync``): when the keys' table changed, forget every key."""
        fingerprint = await ApiKeyRepository(session).fingerprint()
        if fingerprint != self._fingerprint:
            self.verified.reset()
            self._fingerprint = fingerprint
