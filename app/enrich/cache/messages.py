"""What travels on the invalidation channel: a message id, the digests of the keys written, and
the write's commit position in PostgreSQL's WAL when it is known (``lsn``, for the read
replicas: ``app.core.replicas``; absent from messages of older releases and of writers that do
not know it, which readers treat as unknown).

Anyone with access to the Redis server can publish on the channel, so a message is read
strictly: anything this code did not write is refused (``parse_message`` returns None), and
the bus ignores it. No identifier travels in clear (``app.enrich.cache.l1.dep_digest``).

Beside the channel, the bus keeps who listens and who acknowledged in Redis; the two scripts
that read and write those keys are here too (``REGISTER``, ``UNACKNOWLEDGED``), and the
acknowledgements themselves (``acknowledge``, ``acknowledged_by_all``).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence

import orjson
import redis.asyncio as redis
import structlog

from app.enrich.cache.l1 import Digest
from app.platform.metrics import INVALIDATIONS_UNACKNOWLEDGED
from app.platform.redis_client import RedisClient

log = structlog.get_logger("app.enrich.cache.bus")  # (the bus's events, as they always were)

ACK_KEY_SECONDS = 60

MESSAGE_ID = re.compile(r"[0-9a-f]{32}")
MAX_LSN = 1 << 64


def new_message(
    digests: Sequence[Digest], lsn: int | None = None, *, l2_kept: bool = False
) -> tuple[str, bytes]:
    """A new message's id (what its acknowledgements are filed under) and its bytes.

    ``lsn``: the write's commit position (read replicas wait for it). ``l2_kept``: the writer
    could not delete the L2 entries (a Redis Cluster shard is away, see
    ``app.enrich.cache.remote.drop_everywhere``)."""
    message_id = uuid.uuid4().hex
    payload: dict[str, object] = {"id": message_id, "deps": [d.hex() for d in digests]}
    if lsn is not None:
        payload["lsn"] = lsn
    if l2_kept:
        payload["l2_kept"] = True
    return message_id, orjson.dumps(payload)


def says_l2_kept(data: bytes) -> bool:
    """Whether a message (already accepted by ``parse_message``) says L2 kept its entries."""
    payload = orjson.loads(data)
    return isinstance(payload, dict) and payload.get("l2_kept") is True


def parse_message(data: bytes) -> tuple[str, list[Digest], int | None] | None:
    """A message's id, digests and commit position (None: unknown); None for anything this
    code did not publish."""
    try:
        payload = orjson.loads(data)
        message_id, deps = payload["id"], payload["deps"]
        if not isinstance(message_id, str) or not MESSAGE_ID.fullmatch(message_id):
            return None
        if not isinstance(deps, list):
            return None
        lsn = payload.get("lsn")
        if lsn is not None and (type(lsn) is not int or not 0 <= lsn < MAX_LSN):
            return None
        return message_id, [bytes.fromhex(dep) for dep in deps], lsn
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# Register (or renew) ARGV[1] until Redis's now + ARGV[2] seconds; forget lapsed members and
# the process's former ones (ARGV[3...]: an unregistration lost with its connection).
REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], 86400)
"""
# The members registered now, other than ARGV[1], that have not acknowledged KEYS[2] yet.
UNACKNOWLEDGED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local missing = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if member ~= ARGV[1] and redis.call('SISMEMBER', KEYS[2], member) == 0 then
    missing[#missing + 1] = member
  end
end
return missing
"""


async def acknowledged_by_all(
    client: RedisClient, missing: set[bytes], ack_key: str, within: float
) -> bool:
    """Wait until every member in ``missing`` has acknowledged (in ``ack_key``), for at most
    ``within`` seconds; whether they all did."""
    deadline = time.monotonic() + within
    delay = 0.0005
    while missing:
        if time.monotonic() >= deadline:
            log.warning("cache.invalidation_unacknowledged", missing=len(missing))
            INVALIDATIONS_UNACKNOWLEDGED.inc()
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.01)
        missing.difference_update(await client.smembers(ack_key))
    return True


async def acknowledge(client: RedisClient, ack_key: str, member: bytes) -> None:
    """Say ``member`` handled the message whose acknowledgements are in ``ack_key``."""
    for attempt in (1, 2):
        try:
            async with asyncio.timeout(0.5), client.pipeline(transaction=False) as pipe:
                pipe.sadd(ack_key, member)
                pipe.expire(ack_key, ACK_KEY_SECONDS)
                await pipe.execute()
            return
        except redis.ConnectionError as exc:
            if attempt == 2:  # once more: the first may have met a dead pooled connection
                log.warning("cache.ack_failed", error=type(exc).__name__)
        except Exception as exc:
            log.warning("cache.ack_failed", error=type(exc).__name__)
            return
