"""What this process knows of revoked tokens and of clients (usable, disabled or gone)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from app.auth.tokens.claims import InvalidTokenError, Principal, UnknownClientError

# Asks the database about one client (AuthStateSync.resolve_client).
ClientResolver = Callable[[str], Awaitable[None]]
# Deleted clients a process remembers; each came with a validly signed token, so a handful.
MAX_GONE_CLIENTS = 10_000


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
