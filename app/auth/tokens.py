"""Access tokens: RFC 9068 JWTs signed with keys every replica reads from the database.

The verifier keeps each token it has verified until the token expires, so a token costs one
signature check per process; revocations, disabled and deleted clients reach it through a
background poll (see ``sync.py``), never through a round trip on the request path (a client
made since the last poll costs one query, once, on the first verification of its token).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from app.core.models import SigningKey
from app.platform.sizes import DICT_SLOT_BYTES, footprint

TOKEN_TYPE = "at+jwt"
# Loads the signing keys from the database (AuthStateSync.reload_keys).
KeyLoader = Callable[[], Awaitable[None]]
# A token of this many bytes is garbage: refuse it before any parsing.
MAX_TOKEN_BYTES = 4096
# Nor can a longer Authorization header hold one ("Bearer " and the token).
MAX_AUTHORIZATION_BYTES = len("Bearer ") + MAX_TOKEN_BYTES
# Asks the database about one client (AuthStateSync.resolve_client).
ClientResolver = Callable[[str], Awaitable[None]]
# Deleted clients a process remembers; each came with a validly signed token, so a handful.
MAX_GONE_CLIENTS = 10_000


class InvalidTokenError(Exception):
    """The token cannot be used; the message says why (safe to show the caller)."""


class UnknownClientError(InvalidTokenError):
    """The token's client is not known to this process: deleted, or made since the last poll."""

    def __init__(self, client_id: str) -> None:
        super().__init__("the access token's client does not exist")
        self.client_id = client_id


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of an access token."""

    client_id: str
    scopes: frozenset[str]
    jti: str
    exp: int
    iat: int
    claims: dict[str, Any] = field(compare=False, repr=False)


def epoch(value: datetime) -> float:
    """Seconds since the epoch of a stored time (SQLite hands them back naive, in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def new_signing_key(algorithm: str) -> SigningKey:
    """Generate a key pair; the private half is stored as PEM, the public half as a JWK."""
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:  # pragma: no cover - the settings only allow the two above
        raise ValueError(f"unsupported signing algorithm {algorithm}")
    kid = datetime.now(UTC).strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk.update({"kid": kid, "use": "sig", "alg": algorithm})
    return SigningKey(kid=kid, algorithm=algorithm, private_pem=pem, public_jwk=jwk)


@dataclass(slots=True)
class _LoadedKey:
    kid: str
    algorithm: str
    private: Any
    public: Any
    jwk: dict[str, str]
    usable_until: float | None  # epoch seconds; None while the key is active


class KeyRing:
    """The signing keys this process knows: the newest signs, every unexpired one verifies."""

    def __init__(self, token_ttl: int, grace_seconds: float) -> None:
        self.token_ttl = token_ttl
        self.grace = grace_seconds
        self._keys: dict[str, _LoadedKey] = {}
        self._active: _LoadedKey | None = None

    def load(self, rows: list[SigningKey]) -> None:
        """Replace the ring with ``rows`` (every key row in the database)."""
        keys: dict[str, _LoadedKey] = {}
        active: _LoadedKey | None = None
        now = time.time()
        for row in sorted(rows, key=lambda r: r.created_at):
            until = None
            if row.retired_at is not None:
                until = epoch(row.retired_at) + self.token_ttl + self.grace
                if until < now:
                    continue
            existing = self._keys.get(row.kid)
            if existing is not None:
                existing.usable_until = until
                loaded = existing
            else:
                private = serialization.load_pem_private_key(row.private_pem.encode(), None)
                loaded = _LoadedKey(
                    row.kid, row.algorithm, private, private.public_key(), row.public_jwk, until
                )
            keys[row.kid] = loaded
            if until is None:
                active = loaded  # rows are sorted oldest first: the newest active key wins
        self._keys = keys
        self._active = active

    @property
    def active_kid(self) -> str | None:
        return self._active.kid if self._active else None

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [dict(k.jwk) for k in self._keys.values()]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self._active
        if key is None:
            raise RuntimeError("no active signing key")
        return jwt.encode(
            claims,
            key.private,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": TOKEN_TYPE},
        )

    def verification_key(self, kid: str) -> _LoadedKey | None:
        key = self._keys.get(kid)
        if key is None:
            return None
        if key.usable_until is not None and key.usable_until < time.time():
            return None
        return key

    def algorithms(self) -> list[str]:
        return sorted({k.algorithm for k in self._keys.values()})


class TokenIssuer:
    def __init__(self, keyring: KeyRing, issuer: str, audience: str, ttl: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(self, client_id: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
        }
        return self.keyring.sign(claims), claims


class TokenVerifier:
    """Verify access tokens; each token's signature is checked once per process.

    The tokens verified are remembered up to ``max_cached_bytes`` in all (a token and its
    claims are about 2.5 KB, so 64 MiB holds some 25,000 live tokens): a caller minting tokens
    costs a re-verification when the table is full, never the process's memory.
    """

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        revoked: RevocationView,
        max_cached_bytes: int = 64 * 1_048_576,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.revoked = revoked
        self.max_cached_bytes = max_cached_bytes
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
        if principal.exp <= time.time():
            self._forget_header(authorization)
            raise InvalidTokenError("the access token has expired")
        if self.revoked.is_revoked(principal):
            raise InvalidTokenError("the access token has been revoked")
        return principal

    def _refuse_if_dead(self, principal: Principal, token: str) -> None:
        """Raise for an expired token (forgetting it) or a revoked one."""
        if principal.exp <= time.time():
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
            now = time.time()
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


class RevocationView:
    """What this process knows of revoked tokens and of clients: usable, disabled or gone.

    A token is accepted only while its client is known to exist and be enabled, so a deleted
    client's tokens die with it however the row went. A client this process has not heard of
    may be new (made since the last poll, its first token issued by another worker): the
    verifier asks ``resolve`` once, which asks the database (see ``AuthStateSync``).
    """

    def __init__(self) -> None:
        self.jtis: dict[str, float] = {}  # jti -> exp (epoch), pruned after expiry
        # Clients whose tokens are accepted: the hot path's one set lookup.
        self.usable: frozenset[str] = frozenset()
        # Clients known to be disabled or gone: refused without asking the database.
        self.refused: frozenset[str] = frozenset()
        # Asks the database about one client and calls ``learn`` (set by AuthStateSync).
        self.resolver: ClientResolver | None = None
        # What ``learn`` was told: client -> (monotonic time the question was asked, disabled
        # or None when gone), so that a poll which started earlier cannot undo it.
        self._learned: dict[str, tuple[float, bool | None]] = {}

    def is_revoked(self, principal: Principal) -> bool:
        return principal.jti in self.jtis or principal.client_id not in self.usable

    def check(self, principal: Principal) -> None:
        """Raise for a revoked token, or UnknownClientError when its client is not known yet."""
        if principal.jti in self.jtis or principal.client_id in self.refused:
            raise InvalidTokenError("the access token has been revoked")
        if principal.client_id not in self.usable:
            raise UnknownClientError(principal.client_id)

    async def resolve(self, client_id: str) -> None:
        """Find out about a client this process has not heard of (no resolver: it stays so)."""
        if self.resolver is not None:
            await self.resolver(client_id)

    def load_clients(self, disabled: dict[str, bool], asked_at: float) -> None:
        """Replace the clients with a poll's ``{client_id: disabled}``, asked at ``asked_at``.

        Clients known before but missing now are gone: remembered, so their tokens cost no
        query (at most ``MAX_GONE_CLIENTS``; past that they are forgotten and asked once more).
        """
        gone = (self.usable | self.refused) - disabled.keys()
        if len(gone) > MAX_GONE_CLIENTS:
            gone = frozenset()
        usable = {c for c, off in disabled.items() if not off}
        refused = {c for c, off in disabled.items() if off} | gone
        # An answer asked for after this poll started is at least as new as the poll.
        self._learned = {c: a for c, a in self._learned.items() if a[0] >= asked_at}
        for client_id, (_, off) in self._learned.items():
            _place(client_id, off, usable, refused)
        self.usable, self.refused = frozenset(usable), frozenset(refused)

    def learn(self, client_id: str, disabled: bool | None, asked_at: float) -> None:
        """One client's state (``disabled``, or None when it does not exist) as of ``asked_at``."""
        self._learned[client_id] = (asked_at, disabled)
        usable, refused = set(self.usable), set(self.refused)
        _place(client_id, disabled, usable, refused)
        self.usable, self.refused = frozenset(usable), frozenset(refused)

    def add(self, jti: str, exp: float) -> None:
        self.jtis[jti] = exp

    def prune(self) -> None:
        now = time.time()
        self.jtis = {j: e for j, e in self.jtis.items() if e > now}


def _place(client_id: str, disabled: bool | None, usable: set[str], refused: set[str]) -> None:
    if disabled is False:
        usable.add(client_id)
        refused.discard(client_id)
    else:
        refused.add(client_id)
        usable.discard(client_id)


def expires_at(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(claims["exp"]), UTC)


def grace_for(key_refresh_seconds: float) -> float:
    """How long past one token lifetime a retired key keeps verifying (clock and poll slack)."""
    return 60.0 + 2 * key_refresh_seconds


__all__ = [
    "ClientResolver",
    "InvalidTokenError",
    "KeyLoader",
    "KeyRing",
    "Principal",
    "RevocationView",
    "TokenIssuer",
    "TokenVerifier",
    "UnknownClientError",
    "epoch",
    "expires_at",
    "grace_for",
    "new_signing_key",
]
