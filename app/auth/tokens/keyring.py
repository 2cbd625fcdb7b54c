"""The signing keys: made at the first start and by ``enrich keys rotate``, read from the
database by every process; the newest signs, every unexpired one verifies."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from app.auth.tokens.claims import TOKEN_TYPE, epoch
from app.core.models import SigningKey


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


def grace_for(key_refresh_seconds: float) -> float:
    """How long past one token lifetime a retired key keeps verifying (clock and poll slack)."""
    return 60.0 + 2 * key_refresh_seconds
