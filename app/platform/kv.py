"""The shared key-value store: Redis when configured, else an in-process dictionary.

Both speak the same small interface, so services never ask which one they have. Redis calls
carry short timeouts: a slow Redis must cost a request milliseconds, not the deadline.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import redis
import structlog
from redis.asyncio.cluster import RedisCluster

from app.core.settings import Settings
from app.platform import redis_client
from app.platform.redis_client import RedisClient

log = structlog.get_logger(__name__)


class Cache(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, ttl: int) -> int:
        """Add one to a counter that expires ``ttl`` seconds after its first increment."""
        ...

    async def ttl(self, key: str) -> int: ...

    async def counts(self, *keys: str) -> list[int]:
        """Current values of counters made by ``incr`` (0 where absent), in one round trip."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A bounded in-process store with per-key expiry (the embedded default).

    ``clock`` is ``time.monotonic`` but in tests.
    """

    name = "memory"

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._data: OrderedDict[str, tuple[float, bytes | int]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def _live(self, key: str) -> bytes | int | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            del self._data[key]
            return None
        return value

    def _put(self, key: str, value: bytes | int, ttl: float) -> None:
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._put(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def incr(self, key: str, ttl: int) -> int:
        current = self._live(key)
        if isinstance(current, int):
            expires = self._data[key][0]
            self._data[key] = (expires, current + 1)
            return current + 1
        self._put(key, 1, ttl)
        return 1

    async def ttl(self, key: str) -> int:
        item = self._data.get(key)
        if item is None:
            return 0
        return max(0, int(item[0] - self._clock() + 0.999))

    async def counts(self, *keys: str) -> list[int]:
        return [v if isinstance(v := self._live(k), int) else 0 for k in keys]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


# INCR, and the expiry on the first increment (one key: one slot on a cluster too).
INCR = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class RedisCache:
    """Redis (one server or a cluster) behind a key prefix, with connect and socket timeouts
    from the settings."""

    name = "redis"

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.cluster = redis_client.is_cluster(client)
        self._incr: Any = client.register_script(INCR)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisCache:
        client = redis_client.connect(settings, socket_timeout=settings.redis_socket_timeout)
        return cls(client, settings.redis_prefix)

    async def prepare(self, *scripts: str) -> None:
        """Ready a cluster client before the first request (see ``redis_client.prepare``)."""
        await redis_client.prepare(self.client, INCR, *scripts)

    def full_key(self, key: str) -> str:
        """The name Redis keeps ``key`` under, for a client of the same Redis that does not
        go through this one (the enrich reads' own pipe)."""
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(self.prefix + key)
        return value if isinstance(value, bytes) else None  # no decode_responses: always bytes

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` (None where absent), in one round trip."""
        return await redis_client.mget(self.client, [self.prefix + k for k in keys])

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def set_many(self, items: Iterable[tuple[str, bytes, float]]) -> None:
        """Set each (key, value, ttl in seconds), in one round trip (not as a transaction)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value, ttl in items:
                pipe.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
            await pipe.execute()

    async def delete(self, *keys: str) -> None:
        await redis_client.delete(self.client, [self.prefix + k for k in keys])

    async def incr(self, key: str, ttl: int) -> int:
        return int(await self._incr(keys=[self.prefix + key], args=[ttl]))

    async def ttl(self, key: str) -> int:
        return max(0, int(await self.client.ttl(self.prefix + key)))

    async def counts(self, *keys: str) -> list[int]:
        values = await redis_client.mget(self.client, [self.prefix + k for k in keys])
        return [int(v) if v is not None else 0 for v in values]

    async def ping(self) -> bool:
        """Whether Redis answers (readiness). On a cluster, whether any node does, each asked
        on a connection of the ping's own: through the client, a ping waits behind the
        slot-map reads that every call to a dead master starts during a failover, and missed
        readiness's bound on every host at once (the namespace cluster's drill,
        docs/deployment.md). Not on the nodes' pools: a reply that came after a timeout
        would be read by the next command on that connection."""
        nodes = self.client.get_nodes() if isinstance(self.client, RedisCluster) else []
        if not nodes:  # one Redis, or a cluster client that has not read its slot map yet
            return bool(await self.client.ping())
        failure: Exception = redis.ConnectionError("no node of the cluster answers")
        for node in nodes:
            connection = node.connection_class(**node.connection_kwargs)
            try:
                await connection.send_command("PING")
                return bool(await connection.read_response())
            except (redis.RedisError, OSError) as exc:
                failure = exc
            finally:
                await connection.disconnect()
        raise failure

    async def close(self) -> None:
        await self.client.aclose()


def create_cache(settings: Settings) -> Cache:
    if settings.redis_dsn:
        return RedisCache.from_settings(settings)
    return MemoryCache()
