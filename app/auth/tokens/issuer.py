"""Issuing access tokens: the claims of RFC 9068, signed by the key ring's active key."""

from __future__ import annotations

import time
import uuid
from typing import Any

from app.auth.tokens.keyring import KeyRing


class TokenIssuer:
    """Make the access tokens the token endpoint hands out, ``ttl`` seconds each."""

    def __init__(self, keyring: KeyRing, issuer: str, audience: str, ttl: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(
        self, client_id: str, scopes: list[str], certificate: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A signed token for ``client_id`` with ``scopes``, and its claims; bound to the
        client certificate whose thumbprint is ``certificate``, if any (RFC 8705 3.1)."""
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
        if certificate is not None:
            claims["cnf"] = {"x5t#S256": certificate}
        return self.keyring.sign(claims), claims
