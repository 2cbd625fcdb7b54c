"""Cross-process invalidation of L1 over Redis pub/sub.

Every write publishes the identifier keys it touched before it is answered; every process
listens and drops the L1 entries that depend on them. A process that is not subscribed (Redis
down, reconnecting) cannot hear invalidations, so it keeps L1 switched off until it is
subscribed again, and clears it on every (re)subscription.

A frozen Redis (accepting connections, answering nothing) does not close the subscription, so
being subscribed is not enough: each process pings Redis over its subscription every
``PROBE_SECONDS``. When a ping stays unanswered for ``SILENCE_SECONDS`` while the listener kept
running, the process counts as deaf: L1 off. A writer that cannot reach Redis waits
``WRITER_WAIT_SECONDS`` (longer than it takes any listener to notice) before it answers (see
``EnrichCache.invalidate``), so by then every process that may have missed the message serves
nothing from L1. Once Redis answers again, a process that was deaf clears L1 and stops trusting
L2 entries filled before that moment (``trusted_from``): a writer may not have deleted them yet.
A busy event loop that could not read the answers in time is not silence: it changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as redis
import structlog
from redis.asyncio.client import PubSub

from app.caching.l1 import Key, L1Cache

log = structlog.get_logger(__name__)

# A frozen Redis switches L1 off within SILENCE + 2 * PROBE seconds; a write made during the
# outage waits a little longer than that before it is answered.
PROBE_SECONDS = 0.1
SILENCE_SECONDS = 0.5
WRITER_WAIT_SECONDS = SILENCE_SECONDS + 3 * PROBE_SECONDS
# A listener turn this long after the previous one means the event loop was busy: an answer
# may be waiting unread, so the turn does not judge Redis.
STALL_SECONDS = 0.25
# No answer to a ping for this long: the connection is given up and made again.
RECONNECT_SECONDS = 5.0
SUBSCRIBE_TIMEOUT = 1.0


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
        # Whether this process hears invalidations now (and may answer from L1). Without Redis
        # only a single process can be told of writes (the embedded default with one worker):
        # there L1 is always on; with several workers and no Redis, never.
        self.listening = client is None and single_process
        self._missed = False  # deaf since the last time it listened: messages may be lost
        # Wall clock: L2 entries filled before it may have missed an invalidation.
        self.trusted_from = 0.0
        self._task: asyncio.Task[None] | None = None

    def _heard(self) -> None:
        """Redis answered a ping: every message published before it has been handled."""
        if self.listening:
            return
        self.l1.clear()  # anything cached while deaf may be stale
        if self._missed:
            self.trusted_from = time.time()
            self._missed = False
        self.listening = True

    def _deaf(self) -> None:
        # L1 is no longer answered from as fresh; its entries stay as the stale copies to serve
        # (marked stale) should the database fail too, and go when Redis is heard again.
        self.listening = False
        self._missed = True

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
        message = orjson.dumps({"id": message_id, "keys": key_list})
        try:
            async with asyncio.timeout(self.ack_timeout + 0.5):
                try:
                    receivers = await self.client.publish(self.channel, message)
                except redis.ConnectionError:
                    # A restarted Redis leaves dead connections in the pool: each fails once.
                    receivers = await self.client.publish(self.channel, message)
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
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(0.5), self.client.pipeline(transaction=False) as pipe:
                    pipe.incr(ack_key)
                    pipe.expire(ack_key, 60)
                    await pipe.execute()
                return
            except redis.ConnectionError as exc:
                if attempt == 2:  # once more: the first may have met a dead pooled connection
                    log.warning("cache.ack_failed", error=type(exc).__name__)
            except Exception as exc:
                log.warning("cache.ack_failed", error=type(exc).__name__)
                return

    async def _subscribe(self) -> tuple[PubSub, deque[float]]:
        """Subscribe and wait for the answer to a ping sent after it: then L1 may be used."""
        assert self.client is not None
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pings: deque[float] = deque()
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await pubsub.subscribe(self.channel)
                pings.append(time.monotonic())
                await pubsub.ping()
                while pings:
                    await self._handle(await pubsub.get_message(timeout=None), pings)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            raise
        return pubsub, pings

    async def _handle(self, message: dict[str, Any] | None, pings: deque[float]) -> None:
        if message is None:
            return
        if message["type"] == "pong":
            if pings:
                pings.popleft()
            if not pings:
                self._heard()
            return
        if message["type"] != "message":
            return
        payload = orjson.loads(message["data"])
        self.l1.invalidate(tuple(k) for k in payload["keys"])
        await self._acknowledge(payload["id"])

    async def _listen(self, pubsub: PubSub, pings: deque[float]) -> None:
        next_ping = last_turn = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_ping:
                    pings.append(time.monotonic())
                    # Only sends (the answer comes as a message); a frozen Redis's kernel
                    # still takes the bytes, so this does not block.
                    async with asyncio.timeout(PROBE_SECONDS):
                        await pubsub.ping()
                    next_ping = pings[-1] + PROBE_SECONDS
                wait = max(0.0, next_ping - time.monotonic())
                message = await pubsub.get_message(timeout=wait)
                while message is not None:  # everything already received, before judging
                    await self._handle(message, pings)
                    message = await pubsub.get_message(timeout=0)
                now = time.monotonic()
                steady, last_turn = now - last_turn < STALL_SECONDS, now
                silent_for = now - pings[0] if pings else 0.0
                if steady and silent_for > SILENCE_SECONDS:
                    if self.listening:
                        log.warning("cache.redis_silent", seconds=round(silent_for, 3))
                    self._deaf()
                if silent_for > RECONNECT_SECONDS:
                    raise ConnectionError("Redis does not answer on the subscription")
        finally:
            self._deaf()  # the connection is gone, and what was sent on it meanwhile
            # Closing can wait on a connection lock a cancelled read still holds.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def _run(self, subscription: tuple[PubSub, deque[float]] | None) -> None:
        delay = 0.1
        while True:
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                delay = 0.1
                await self._listen(*subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cache.subscription_lost", error=type(exc).__name__)
            subscription = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        """Subscribe before the first request when Redis answers, then listen in the background."""
        if self.client is None:
            return
        subscription = None
        try:
            subscription = await self._subscribe()
        except Exception as exc:
            log.warning("cache.subscribe_failed", error=type(exc).__name__)
            self._missed = True  # writes made before it hears Redis may not have reached L2
        self._task = asyncio.create_task(
            self._run(subscription), name="cache-invalidation-listener"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
