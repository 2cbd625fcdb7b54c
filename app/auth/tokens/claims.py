"""What an access token says once verified (``Principal``), and why one is refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TOKEN_TYPE = "at+jwt"
# A token of this many bytes is garbage: refuse it before any parsing.
MAX_TOKEN_BYTES = 4096
# Nor can a longer Authorization header hold one ("Bearer " and the token).
MAX_AUTHORIZATION_BYTES = len("Bearer ") + MAX_TOKEN_BYTES


class InvalidTokenError(Exception):
    """The token cannot be used; the message says why (safe to show the caller)."""


# Why a certificate-bound token is refused (RFC 8705 3: 401 invalid_token).
BOUND_ELSEWHERE = "the access token is bound to a client certificate this request did not present"


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
    # The x5t#S256 thumbprint of the client certificate the token is bound to (RFC 8705):
    # every request with it must come over a connection that presented that certificate.
    bound_to: str | None = None

    def refuses(self, presented: str | None) -> bool:
        """Whether a request that presented the certificate ``presented`` may not use it."""
        return self.bound_to is not None and self.bound_to != presented


def epoch(value: datetime) -> float:
    """Seconds since the epoch of a stored time (SQLite hands them back naive, in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def expires_at(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(claims["exp"]), UTC)
