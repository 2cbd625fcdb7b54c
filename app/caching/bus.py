"""Cross-process invalidation of L1 over Redis pub/sub.

Every write publishes the identifier keys it touched before it is answered; every process
listens and drops the L1 entries that depend on them. A process that is not subscribed (Redis
down, reconnecting) cannot hear invalidations, so it keeps L1 switched off until it is
subscribed again, and clears it on every (re)subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable

import orjson
import redis.asyncio as redis
import structlog
from redis.asyncio.client import PubSub

from app.caching.l1 import Key, L1Cache

log = structlog.get_logger(__name__)


class InvalidationBus:
    def __init__(
        self,
        l1: L1Cache,
        client: redis.Redis | None,
        channel: str,
        *,
        single_process: bool,
        ack_timeout: float = 0.2,
    ) -> None:
        self.l1 = l1
        self.client = client
        self.channel = channel
        self.ack_timeout = ack_timeout
        # Without Redis only a single process can be told of writes (the embedded default
        # with one worker): there L1 is always on; with several workers and no Redis, never.
        self.listening = client is None and single_process
        self._task: asyncio.Task[None] | None = None

    async def publish(self, keys: Iterable[Key], *, raise_errors: bool = False) -> None:
        """Drop ``keys`` here and in every other process, and wait until they have.

        PUBLISH says how many subscribers received the message; each one acknowledges after
        dropping its entries, so once this returns no process answers from the old entries.
        A subscriber that does not acknowledge within ``ack_timeout`` is logged, not waited for.
        """
        key_list = list(keys)
        self.l1.invalidate(key_list)
        if self.client is None or not key_list:
            return
        message_id = uuid.uuid4().hex
        try:
            async with asyncio.timeout(self.ack_timeout + 0.5):
                receivers = await self.client.publish(
                    self.channel, orjson.dumps({"id": message_id, "keys": key_list})
                )
                await self._await_acks(message_id, int(receivers))
        except Exception as exc:
            log.warning("cache.publish_failed", error=type(exc).__name__)
            if raise_errors:
                raise

    def _ack_key(self, message_id: str) -> str:
        return f"{self.channel}:ack:{message_id}"

    async def _await_acks(self, message_id: str, receivers: int) -> None:
        assert self.client is not None
        deadline = time.monotonic() + self.ack_timeout
        delay = 0.0005
        while True:
            count = int(await self.client.get(self._ack_key(message_id)) or 0)
            if count >= receivers:
                return
            if time.monotonic() >= deadline:
                log.warning("cache.invalidation_unacknowledged", missing=receivers - count)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    async def _acknowledge(self, message_id: str) -> None:
        assert self.client is not None
        ack_key = self._ack_key(message_id)
        try:
            async with asyncio.timeout(0.5), self.client.pipeline(transaction=False) as pipe:
                pipe.incr(ack_key)
                pipe.expire(ack_key, 60)
                await pipe.execute()
        except Exception as exc:
            log.warning("cache.ack_failed", error=type(exc).__name__)

    async def _subscribe(self) -> PubSub:
        assert self.client is not None
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)
            raise
        self.l1.clear()  # anything cached while deaf may be stale
        self.listening = True
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                payload = orjson.loads(message["data"])
                self.l1.invalidate(tuple(k) for k in payload["keys"])
                await self._acknowledge(payload["id"])
        finally:
            self.listening = False
            self.l1.clear()
            # Closing can wait on a connection lock a cancelled read still holds.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def _run(self, pubsub: PubSub | None) -> None:
        delay = 0.1
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                delay = 0.1
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cache.subscription_lost", error=type(exc).__name__)
            pubsub = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        """Subscribe before the first request when Redis answers, then listen in the background."""
        if self.client is None:
            return
        pubsub = None
        try:
            pubsub = await asyncio.wait_for(self._subscribe(), 1.0)
        except Exception as exc:
            log.warning("cache.subscribe_failed", error=type(exc).__name__)
        self._task = asyncio.create_task(self._run(pubsub), name="cache-invalidation-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
