"""The per-client checks after authentication: the address allowlist, then the rate limit.

Both the FastAPI routes (``require_scope``) and the enrich fast path call ``Guard.admit``.
What it needs to know of each client (its limit and allowlist) is in memory, refreshed by the
background poll that also brings revocations and disabled clients (``AuthStateSync``), so a
request costs no database round trip, and a change made with the CLI reaches every worker
within a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from app.core.addresses import NetworkSet
from app.core.errors import AppError
from app.platform.metrics import ADDRESS_REFUSED, RATE_LIMITED
from app.platform.ratelimit import PENDING, Limit, Limiter, RateLimitedError, Verdict

# (client_id, rate_limit_rps, rate_limit_burst, allowed_networks), as stored on the client
PolicyRow = tuple[str, float | None, int | None, str | None]


class AddressRefusedError(AppError):
    status_code = 403
    code = "forbidden"

    def __init__(self) -> None:
        super().__init__("this client may not call from this address")


def limit_for(rps: float | None, burst: int | None, default: Limit | None) -> Limit | None:
    """A client's limit: its own when set (0: none), else the default."""
    if rps is None:
        return default
    if rps <= 0:
        return None
    return Limit(rps, burst or max(1, math.ceil(rps)))


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    limit: Limit | None  # None: not limited
    networks: NetworkSet | None  # None: any address


class ClientPolicies:
    """Each client's limit and allowlist, as this process last loaded them."""

    def __init__(self, default_limit: Limit | None) -> None:
        self.default_limit = default_limit
        self.default = ClientPolicy(default_limit, None)
        self._by_client: dict[str, ClientPolicy] = {}
        self._rows: tuple[PolicyRow, ...] = ()

    def get(self, client_id: str) -> ClientPolicy:
        return self._by_client.get(client_id, self.default)

    def load(self, rows: Iterable[PolicyRow]) -> None:
        """Replace the policies with ``rows`` (the clients that have a limit or an allowlist)."""
        ordered = tuple(sorted(rows, key=lambda row: row[0]))
        if ordered == self._rows:
            return  # unchanged: keep the address memos warm
        by_client = {}
        for client_id, rps, burst, networks in ordered:
            allowed = NetworkSet.parse(networks) if networks else None
            by_client[client_id] = ClientPolicy(limit_for(rps, burst, self.default_limit), allowed)
        self._by_client = by_client
        self._rows = ordered


class Guard:
    def __init__(self, policies: ClientPolicies, limiter: Limiter | None) -> None:
        self.policies = policies
        self.limiter = limiter

    def admit(self, client_id: str, host: str | None) -> AppError | Verdict:
        """None to serve the request, an error to answer, or PENDING: await ``admit_later``."""
        policy = self.policies.get(client_id)
        if policy.networks is not None and host not in policy.networks:
            ADDRESS_REFUSED.labels(client_id).inc()
            return AddressRefusedError()
        if policy.limit is None or self.limiter is None:
            return None
        verdict = self.limiter.try_take(client_id, policy.limit)
        if verdict is not None and verdict is not PENDING:
            RATE_LIMITED.labels(client_id).inc()
        return verdict

    async def admit_later(self, client_id: str) -> RateLimitedError | None:
        """The rate limit's answer when ``admit`` could not give it without Redis."""
        limit = self.policies.get(client_id).limit
        if limit is None or self.limiter is None:
            return None
        refusal = await self.limiter.take(client_id, limit)
        if refusal is not None:
            RATE_LIMITED.labels(client_id).inc()
        return refusal

    async def check(self, client_id: str, host: str | None) -> None:
        """Raise the refusal, if any (for the FastAPI routes)."""
        verdict = self.admit(client_id, host)
        if verdict is PENDING:
            verdict = await self.admit_later(client_id)
        if isinstance(verdict, AppError):
            raise verdict
