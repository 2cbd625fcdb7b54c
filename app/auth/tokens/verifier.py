"""Verifying access tokens, each signature once per process.

The verifier keeps each token it has verified until the token expires, so a token costs one
signature check per process; revocations, disabled and deleted clients reach it through the
``RevocationView`` (kept by a background poll, see ``app/auth/sync.py``), never through a round
trip on the request path (a client made since the last poll costs one query, once, on the first
verification of its token).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from app.auth.tokens.claims import (
    MAX_AUTHORIZATION_BYTES,
    MAX_TOKEN_BYTES,
    TOKEN_TYPE,
    InvalidTokenError,
    Principal,
    UnknownClientError,
)
from app.auth.tokens.keyring import KeyRing
from app.auth.tokens.revocation import RevocationView
from app.platform.sizes import DICT_SLOT_BYTES, footprint

# Loads the signing keys from the database (AuthStateSync.reload_keys).
KeyLoader = Callable[[], Awaitable[None]]


class TokenVerifier:
    """Verify access tokens; each token's signature is checked once per process.

    The tokens verified are remembered up to ``max_cached_bytes`` in all (a token and its
    claims are about 2.5 KB, so 64 MiB holds some 25,000 live tokens): a caller minting tokens
    costs a re-verification when the table is full, never the process's memory.

    ``clock`` (epoch seconds, ``time.time`` but in tests) says when a remembered token has
    expired; a token verified afresh is checked by PyJWT against the wall clock.
    """

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        revoked: RevocationView,
        max_cached_bytes: int = 64 * 1_048_576,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.revoked = revoked
        self.max_cached_bytes = max_cached_bytes
        self.clock = clock
        self._verified: dict[str, Principal] = {}
        self._verified_bytes = 0
        # The same, keyed by the Authorization header as it arrived (see ``bearer``); only
        # ``Bearer <token>`` exactly, so at most two headers (``Bearer``, ``bearer``) a token.
        self._by_header: dict[bytes, Principal] = {}
        self._by_header_bytes = 0

    def cached(self, token: str) -> Principal | None:
        """The hot path: a token seen before, still unexpired and not revoked."""
        principal = self._verified.get(token)
        if principal is not None:
            self._refuse_if_dead(principal, token)
        return principal

    def bearer(self, authorization: bytes) -> Principal | None:
        """``cached`` for a raw ``Authorization: Bearer`` header (the enrich fast path).

        A header seen before is looked up as it is: no slicing, stripping or decoding of a
        token of a few hundred bytes per request. Expiry and revocation are checked each time.
        A header longer than any token issued is refused before any of that.
        """
        principal = self._by_header.get(authorization)
        if principal is None:
            if len(authorization) > MAX_AUTHORIZATION_BYTES:
                raise InvalidTokenError("the access token is malformed")
            if not authorization.startswith((b"Bearer ", b"bearer ")):
                return None
            sent = authorization[7:]
            token = sent.strip()
            principal = self.cached(token.decode("latin-1"))
            if principal is not None and len(token) == len(sent):
                self._remember_header(authorization, principal)
            return principal
        if principal.exp <= self.clock():
            self._forget_header(authorization)
            raise InvalidTokenError("the access token has expired")
        if self.revoked.is_revoked(principal):
            raise InvalidTokenError("the access token has been revoked")
        return principal

    def _refuse_if_dead(self, principal: Principal, token: str) -> None:
        """Raise for an expired token (forgetting it) or a revoked one."""
        if principal.exp <= self.clock():
            self._forget(token)
            raise InvalidTokenError("the access token has expired")
        if self.revoked.is_revoked(principal):
            raise InvalidTokenError("the access token has been revoked")

    def kid_of(self, token: str) -> str:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidTokenError("the access token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the access token is malformed") from exc
        typ = str(header.get("typ", "")).lower()
        if typ not in (TOKEN_TYPE, "application/" + TOKEN_TYPE):
            raise InvalidTokenError("the token is not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidTokenError("the access token names no signing key")
        return kid

    async def check(self, token: str, reload_keys: KeyLoader) -> Principal:
        """Verify ``token``, loading the keys first when it names one this process lacks.

        Another worker may already sign with a key made by ``enrich keys rotate`` that this
        process has not polled yet; such a token is valid and must not wait for the poll.
        """
        principal = self.cached(token)
        if principal is not None:
            return principal
        if self.keyring.verification_key(self.kid_of(token)) is None:
            await reload_keys()
        try:
            return self.verify(token)
        except UnknownClientError as exc:
            # A client made since the last poll (its token came from another worker), or one
            # deleted: ask once; the answer is remembered either way.
            await self.revoked.resolve(exc.client_id)
            return self.verify(token)

    def verify(self, token: str, *, verify_exp: bool = True) -> Principal:
        """Check signature, typ, iss, aud, exp and revocation; raise InvalidTokenError."""
        principal = self._verified.get(token) if verify_exp else None
        if principal is not None:
            cached = self.cached(token)
            assert cached is not None
            return cached
        kid = self.kid_of(token)
        key = self.keyring.verification_key(kid)
        if key is None:
            raise InvalidTokenError("the access token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "jti", "client_id"],
                    "verify_exp": verify_exp,
                },
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("the access token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidTokenError("the access token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidTokenError("the access token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the access token is invalid") from exc
        principal = Principal(
            client_id=str(claims["client_id"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
            iat=int(claims["iat"]),
            claims=claims,
            bound_to=_bound_to(claims),
        )
        self.revoked.check(principal)
        if verify_exp:
            self._remember(token, principal)
        return principal

    # -- the tables of verified tokens, bounded in bytes -----------------------------------

    @staticmethod
    def _token_cost(token: str, principal: Principal) -> int:
        return footprint(token) + footprint(principal) + DICT_SLOT_BYTES

    def _remember(self, token: str, principal: Principal) -> None:
        if token in self._verified:
            self._forget(token)
        cost = self._token_cost(token, principal)
        if self._verified_bytes + cost > self.max_cached_bytes:
            now = self.clock()
            for dead in [t for t, p in self._verified.items() if p.exp <= now]:
                self._forget(dead)
            if self._verified_bytes + cost > self.max_cached_bytes * 3 // 4:
                self._verified.clear()  # live tokens are verified again, once each
                self._verified_bytes = 0
        self._verified[token] = principal
        self._verified_bytes += cost

    def _forget(self, token: str) -> None:
        principal = self._verified.pop(token, None)
        if principal is not None:
            self._verified_bytes -= self._token_cost(token, principal)

    def _remember_header(self, authorization: bytes, principal: Principal) -> None:
        # The principal is the one ``_verified`` holds: only the header costs more.
        cost = footprint(authorization) + DICT_SLOT_BYTES
        if self._by_header_bytes + cost > self.max_cached_bytes // 2:
            self._by_header.clear()
            self._by_header_bytes = 0
        self._by_header[authorization] = principal
        self._by_header_bytes += cost

    def _forget_header(self, authorization: bytes) -> None:
        if self._by_header.pop(authorization, None) is not None:
            self._by_header_bytes -= footprint(authorization) + DICT_SLOT_BYTES


def _bound_to(claims: dict[str, Any]) -> str | None:
    """The certificate thumbprint of the token's ``cnf`` claim (RFC 8705 3.1), if any."""
    confirmation = claims.get("cnf")
    if isinstance(confirmation, dict):
        value = confirmation.get("x5t#S256")
        if isinstance(value, str):
            return value
        if value is not None or confirmation:  # a confirmation this server cannot check
            return ""
    return None
