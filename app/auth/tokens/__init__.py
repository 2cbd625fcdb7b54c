"""Access tokens: RFC 9068 JWTs signed with keys every replica reads from the database.

- ``claims``: what a verified token says (``Principal``) and the errors that refuse one.
- ``keyring``: the signing keys (``KeyRing``), made by ``new_signing_key``.
- ``issuer``: ``TokenIssuer``, the claims of a new token, signed by the active key.
- ``verifier``: ``TokenVerifier``, each token's signature checked once per process.
- ``revocation``: ``RevocationView``, the revoked tokens and the clients' states a background
  poll keeps (see ``app/auth/sync.py``).

Their users import from here.
"""

from app.auth.tokens.claims import (
    BOUND_ELSEWHERE,
    MAX_AUTHORIZATION_BYTES,
    MAX_TOKEN_BYTES,
    TOKEN_TYPE,
    InvalidTokenError,
    Principal,
    UnknownClientError,
    epoch,
    expires_at,
)
from app.auth.tokens.issuer import TokenIssuer
from app.auth.tokens.keyring import KeyRing, grace_for, new_signing_key
from app.auth.tokens.revocation import MAX_GONE_CLIENTS, ClientResolver, RevocationView
from app.auth.tokens.verifier import KeyLoader, TokenVerifier

__all__ = [
    "BOUND_ELSEWHERE",
    "MAX_AUTHORIZATION_BYTES",
    "MAX_GONE_CLIENTS",
    "MAX_TOKEN_BYTES",
    "TOKEN_TYPE",
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
