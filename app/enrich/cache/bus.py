"""Cross-process invalidation of L1 over Redis pub/sub (sharded on a Redis Cluster).

Every write publishes the identifier keys it touched before it is answered; every process
listens and drops the L1 entries that depend on them. A process that is not subscribed (Redis
down, reconnecting) cannot hear invalidations, so it keeps L1 switched off until it is
subscribed again, and clears it on every (re)subscription.

Pub/sub is open to every client of the Redis server, whatever its database number, so the
channel is named after the deployment (prefix and database number, ``invalidation_channel``),
messages carry the keys' digests, never an identifier (``dep_digest``: L1 is indexed by them),
and a writer waits only for the processes of its deployment: each subscription registers a
member id in the deployment's database (renewed every ``RENEW_SECONDS``, lapsing after
``REGISTRATION_SECONDS``) before it counts as listening, and acknowledges under that id. A
writer waits for the members registered when its message went out, not for however many
clients PUBLISH reached: a stranger's subscriber cannot hold writes up, nor see who was written.
A process whose registration may have lapsed (writers stop waiting for it) answers nothing
from L1 until it is renewed.

A frozen Redis (accepting connections, answering nothing) does not close the subscription, so
being subscribed is not enough: each process pings Redis over its subscription every
``PROBE_SECONDS``. When a ping stays unanswered for ``SILENCE_SECONDS`` while the listener kept
running, the process counts as deaf: L1 off. A writer that cannot reach Redis waits
``WRITER_WAIT_SECONDS`` (longer than it takes any listener to notice) before it answers (see
``EnrichCache.invalidate``), so by then every process that may have missed the message serves
nothing from L1, and no L2 entry is fresh for it. Once Redis answers again, a process that was
deaf clears L1 and stops trusting L2 entries filled before that moment (``trusted_from``): a
writer may not have deleted them yet.
A busy event loop that could not read the answers in time is not silence: it changes nothing.
But it may leave a message unread while requests are answered from L1, so L1 answers only
while the last ping answered was sent less than ``HEARD_SECONDS`` ago (``hears_now``), and a
writer that misses an acknowledgement answers only ``HEARD_SECONDS`` after its message went
out: a process that has not handled it by then no longer answers from L1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as redis
import structlog
from redis.asyncio.client import PubSub

from app.enrich.cache.l1 import L1Cache, dep_digest
from app.enrich.cache.messages import (
    REGISTER,
    UNACKNOWLEDGED,
    acknowledge,
    acknowledged_by_all,
    new_message,
    parse_message,
    says_l2_kept,
)
from app.identity.identifiers import Key
from app.platform import redis_client
from app.platform.redis_client import RedisClient

log = structlog.get_logger(__name__)

# A frozen Redis switches L1 off within SILENCE + 2 * PROBE seconds; a write made during the
# outage waits a little longer than that before it is answered.
PROBE_SECONDS = 0.1
SILENCE_SECONDS = 0.5
# L1 answers only while the last ping answered was sent less than this long ago; a writer
# missing an acknowledgement waits this long (and the margin) after its message (hears_now).
HEARD_SECONDS = SILENCE_SECONDS
UNHEARD_MARGIN = 0.05
WRITER_WAIT_SECONDS = SILENCE_SECONDS + 3 * PROBE_SECONDS
# A listener turn this long after the previous one means the event loop was busy: an answer
# may be waiting unread, so the turn does not judge Redis.
STALL_SECONDS = 0.25
# No answer to a ping for this long: the connection is given up and made again.
RECONNECT_SECONDS = 5.0
SUBSCRIBE_TIMEOUT = 1.0
# A member's registration lasts this long (Redis's clock) unless renewed. A process that
# stops without leaving (killed) costs writes the ack timeout until it lapses.
REGISTRATION_SECONDS = 10.0
RENEW_SECONDS = 1.0
# The process stops trusting its registration this long before it lapses: writers may stop
# waiting for it only after it stopped answering from L1.
REGISTRATION_MARGIN = 3.0


class InvalidationBus:
    """This process's end of the channel: it publishes the keys of its writes, and drops its
    L1 entries for the writes of every process; ``hears_now()`` says whether L1 may answer."""

    def __init__(
        self,
        l1: L1Cache,
        client: RedisClient | None,
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
        # When (monotonic) the last ping answered on the subscription was sent; L1 answers
        # only while it is younger than HEARD_SECONDS (``hears_now``). Without Redis, one
        # process hears its own writes at once.
        self.heard_at = math.inf if self.listening else -math.inf
        self._missed = False  # deaf since the last time it listened: messages may be lost
        # Wall clock: L2 entries filled before it may have missed an invalidation (while the
        # process is deaf, every entry: infinity).
        self.trusted_from = 0.0
        self._task: asyncio.Task[None] | None = None
        # Told of every write heard (its digests and commit position): see app/core/replicas.py.
        self.on_write: Callable[[list[bytes], int | None], None] | None = None
        # The current subscription's member id, and until when (monotonic) writers surely
        # wait for its acknowledgements.
        self._member: bytes | None = None
        self._trusted_until = 0.0
        self._renewal: asyncio.Task[None] | None = None
        self._former: deque[bytes] = deque(maxlen=4)  # this process's earlier member ids
        self._chores: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._members_key = f"{channel}:members"
        if client is not None:
            self._register_script = client.register_script(REGISTER)
            self._unacknowledged = client.register_script(UNACKNOWLEDGED)

    def _heard(self) -> None:
        """Redis answered a ping: every message published before it has been handled."""
        if self.listening or time.monotonic() >= self._trusted_until:
            return  # (writers might not wait for this process: it stays deaf)
        self.l1.clear()  # anything cached while deaf may be stale
        if self._missed:
            self.trusted_from = time.time()
            self._missed = False
        self.listening = True

    def _deaf(self) -> None:
        # L1 is no longer answered from as fresh; its entries stay as the stale copies to serve
        # (marked stale) should the database fail too, and go when Redis is heard again.
        # No L2 entry is fresh meanwhile either: a write whose delete failed (its Redis node
        # away) is answered once the processes that may have missed its message are deaf, and
        # its entries can be readable again (a replica promoted, a node back) before this
        # process hears Redis again (its subscription is still backing off).
        self.listening = False
        self._missed = True
        self.trusted_from = math.inf

    async def publish(
        self,
        keys: Iterable[Key],
        *,
        raise_errors: bool = False,
        lsn: int | None = None,
        l2_kept: bool = False,
    ) -> None:
        """Drop ``keys`` here and in every other process, and wait until they have.

        Each process of the deployment registered when the message went out acknowledges
        after dropping its entries, so once this returns none answers from the old entries.
        One that does not within ``ack_timeout`` is not waited for (a dead worker would hold
        every write up until its registration lapses), but the write then waits until
        HEARD_SECONDS passed since the message went out: see ``hears_now``.
        """
        digests = [dep_digest(key) for key in keys]
        self.l1.drop_digests(digests)
        if self.client is None or not digests:
            return
        message_id, message = new_message(digests, lsn, l2_kept=l2_kept)
        try:
            async with asyncio.timeout(self.ack_timeout + 0.5):
                try:
                    await redis_client.publish(self.client, self.channel, message)
                except redis.ConnectionError:
                    # A restarted Redis leaves dead connections in the pool: each fails once.
                    await redis_client.publish(self.client, self.channel, message)
                published_at = time.monotonic()  # (Redis has taken the message)
                heard_by_all = await self._await_acks(message_id)
        except Exception as exc:
            log.warning("cache.publish_failed", error=type(exc).__name__)
            if raise_errors:
                raise
            return
        if not heard_by_all:
            unheard_until = published_at + HEARD_SECONDS + UNHEARD_MARGIN
            await asyncio.sleep(max(0.0, unheard_until - time.monotonic()))

    def _ack_key(self, message_id: str) -> str:
        return f"{self.channel}:acks:{message_id}"

    def hears_now(self) -> bool:
        """Whether L1 may answer now: subscribed, and every message published up to
        HEARD_SECONDS ago handled (a ping sent since then answered): a member that did not
        acknowledge a write in time answers nothing from L1 once its writer answers."""
        return self.listening and time.monotonic() - self.heard_at < HEARD_SECONDS

    async def _await_acks(self, message_id: str) -> bool:
        """Wait for the members registered now (after the message went out: a member that
        registers later subscribed after it, and clears L1 before it listens), up to the ack
        timeout; whether every one acknowledged."""
        assert self.client is not None
        ack_key = self._ack_key(message_id)
        missing = set(
            await self._unacknowledged(
                keys=[self._members_key, ack_key], args=[self._member or b""]
            )
        )
        return await acknowledged_by_all(self.client, missing, ack_key, self.ack_timeout)

    async def _register(self, member: bytes) -> None:
        """Register (or renew) ``member``: writers wait for it until the registration lapses."""
        sent = time.monotonic()
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            await self._register_script(
                keys=[self._members_key], args=[member, REGISTRATION_SECONDS, *self._former]
            )
        if member == self._member:
            self._trusted_until = sent + REGISTRATION_SECONDS - REGISTRATION_MARGIN

    async def _renew(self, member: bytes) -> None:
        try:
            await self._register(member)
        except Exception as exc:
            log.warning("cache.register_failed", error=type(exc).__name__)

    def _leave(self) -> None:
        """Unregister the current member (so writers stop waiting for it), in the background,
        after a renewal under way (else that could register it again)."""
        member, self._member, self._trusted_until = self._member, None, 0.0
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            self._track(renewal)  # (so that stop() does not leave it behind)
        if member is None or self.client is None:
            return
        self._former.append(member)
        client = self.client

        async def unregister() -> None:
            if renewal is not None:
                await asyncio.wait({renewal})
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.zrem(self._members_key, member)

        self._track(asyncio.create_task(unregister()))

    def _track(self, chore: asyncio.Task[None]) -> None:
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def _subscribe(self) -> tuple[PubSub, deque[float]]:
        """Subscribe, register, and wait for the answer to a ping sent after both: then L1
        may be used."""
        assert self.client is not None
        pubsub: PubSub | None = None
        pings: deque[float] = deque()
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                pubsub = await redis_client.subscribe(self.client, self.channel)
                self._member = uuid.uuid4().hex.encode()
                await self._register(self._member)
                pings.append(time.monotonic())
                await pubsub.ping()
                while pings:
                    await self._handle(await pubsub.get_message(timeout=None), pings)
        except BaseException:
            self._leave()
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            raise
        return pubsub, pings

    async def _handle(self, message: dict[str, Any] | None, pings: deque[float]) -> None:
        if message is None:
            return
        if message["type"] == "pong":
            if pings:
                self.heard_at = max(self.heard_at, pings.popleft())
            if not pings:
                self._heard()
            return
        if message["type"] == "sunsubscribe":  # the slot left the node (Redis Cluster)
            raise ConnectionError("the channel's slot moved to another node")
        if message["type"] not in ("message", "smessage"):
            return
        parsed = parse_message(message["data"])
        if parsed is None:  # anyone may publish on the channel: not ours, nothing to drop
            log.warning("cache.foreign_message", size=len(message["data"]))
            return
        message_id, digests, lsn = parsed
        if self.on_write is not None:
            self.on_write(digests, lsn)  # (the read replicas' marks, before the acknowledgement)
        self.l1.drop_digests(digests)
        if says_l2_kept(message["data"]):
            self.trusted_from = max(self.trusted_from, time.time())
        if self._member is not None and self.client is not None:
            await acknowledge(self.client, self._ack_key(message_id), self._member)

    async def _listen(self, pubsub: PubSub, pings: deque[float]) -> None:
        next_ping = last_turn = next_renewal = time.monotonic()
        try:
            while not self._stopping:
                if time.monotonic() >= next_ping:
                    pings.append(time.monotonic())
                    # Only sends (the answer comes as a message); a frozen Redis's kernel
                    # still takes the bytes, so this does not block.
                    async with asyncio.timeout(PROBE_SECONDS):
                        await pubsub.ping()
                    next_ping = pings[-1] + PROBE_SECONDS
                if time.monotonic() >= next_renewal and self._member is not None:
                    if self._renewal is None or self._renewal.done():
                        # In the background: the listener keeps reading meanwhile.
                        self._renewal = asyncio.create_task(self._renew(self._member))
                    next_renewal = time.monotonic() + RENEW_SECONDS
                wait = max(0.0, min(next_ping, next_renewal) - time.monotonic())
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
                if now >= self._trusted_until and self.listening:
                    # Writers may stop waiting for this process, which still hears them (so
                    # it misses nothing, and L2 stays trusted): only L1 waits for a renewal.
                    log.warning("cache.registration_lapsing")
                    self.listening = False
                if silent_for > RECONNECT_SECONDS:
                    raise ConnectionError("Redis does not answer on the subscription")
        finally:
            self._deaf()  # the connection is gone, and what was sent on it meanwhile
            self._leave()
            # Closing can wait on a connection lock a cancelled read still holds.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def _run(self, subscription: tuple[PubSub, deque[float]] | None) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                delay = 0.1
                await self._listen(*subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return  # (redis-py can turn the cancellation into a connection error)
                log.warning("cache.subscription_lost", error=type(exc).__name__)
                await redis_client.refresh(self.client)  # type: ignore[arg-type]
            subscription = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        """Subscribe before the first request when Redis answers, then listen in the background."""
        if self.client is None:
            return
        subscription = None
        await redis_client.prepare(self.client, REGISTER, UNACKNOWLEDGED)
        try:
            subscription = await self._subscribe()
        except Exception as exc:
            log.warning("cache.subscribe_failed", error=type(exc).__name__)
            self._deaf()  # writes made before it hears Redis may not have reached L2
        self._task = asyncio.create_task(
            self._run(subscription), name="cache-invalidation-listener"
        )

    async def stop(self) -> None:
        self._stopping = True  # the listener does not subscribe again, whatever it meets
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
        self._leave()  # (when the listener did not get to it)
        chores = set(self._chores)
        if chores:
            # A second at most for the unregistration (writers then stop waiting for this
            # process at once, rather than when its registration lapses); what is not done by
            # then is cancelled, so that nothing is left pending when the event loop closes.
            await asyncio.wait(chores, timeout=1.0)
            for chore in chores:
                chore.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
