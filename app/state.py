"""What the lifespan builds once per process and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.service import AuthFailureThrottle
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, RevocationView, TokenIssuer, TokenVerifier
from app.cache import Cache
from app.config import Settings
from app.enrich.cache import EnrichCache
from app.ops.state import Operations


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: KeyRing
    revocations: RevocationView
    issuer: TokenIssuer
    verifier: TokenVerifier
    throttle: AuthFailureThrottle
    auth_sync: AuthStateSync
    enrich_cache: EnrichCache
    ops: Operations
