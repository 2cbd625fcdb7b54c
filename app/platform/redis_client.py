"""Redis clients: one server (the default) or a Redis Cluster (``ENRICH_REDIS_CLUSTER``).

Both are redis-py asyncio clients with the same commands, so the rest of the service holds a
``RedisClient`` and asks ``is_cluster`` only where the two differ:

- multi-key reads (MGET) are split by slot (``mget``): the keys of one enrich request or of
  one failed-login check need no atomicity, and each lives in its own slot so the load spreads;
- keys a script or a transaction touches together share a hash tag (``{...}``), see
  ``tagged``;
- invalidation uses sharded pub/sub (SSUBSCRIBE/SPUBLISH): only the shard that owns the
  channel's slot carries it, not every node (``subscribe``).

A cluster client keeps a connection pool per node and follows MOVED/ASK redirections; after a
failover or a slot migration it reads the slot map again on the first error, so both cost
errors only until the cluster settles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, TypeAlias, cast

import redis.asyncio as redis
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from app.core.settings import Settings

log = structlog.get_logger(__name__)

RedisClient: TypeAlias = redis.Redis | RedisCluster


def connect(settings: Settings, *, socket_timeout: float) -> RedisClient:
    """A client for the configured Redis: short connect timeouts, ``socket_timeout`` per call."""
    if settings.redis_cluster:
        return _connect_cluster(settings, socket_timeout)
    dsn = settings.redis_dsn
    assert dsn is not None
    return redis.Redis.from_url(
        dsn,
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        # A restarted Redis leaves a dead connection in the pool, which fails once: try
        # a new one then. A timeout is not retried (a hung Redis must cost one timeout).
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


def connect_bus(settings: Settings) -> RedisClient:
    """The invalidation bus's own client: no socket timeout (its subscription blocks on reads;
    its other calls have timers of their own)."""
    if settings.redis_cluster:
        return _connect_cluster(settings, None)
    return redis.Redis.from_url(
        settings.redis_dsn or "", socket_connect_timeout=settings.redis_connect_timeout
    )


def _connect_cluster(settings: Settings, socket_timeout: float | None) -> RedisCluster:
    dsn = settings.redis_dsn
    assert dsn is not None
    if "{" in settings.redis_prefix or "}" in settings.redis_prefix:
        raise ValueError("ENRICH_REDIS_PREFIX cannot hold { or } on a Redis Cluster")
    seeds = [ClusterNode(host, port) for host, port in settings.cluster_seeds]
    return RedisCluster.from_url(
        dsn,
        startup_nodes=seeds or None,
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        # A dead node or a moved slot: read the slot map again and retry twice, quickly
        # (callers on the request path bound the whole call by their own deadline).
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
    )


async def prepare(client: RedisClient, *scripts: str, within: float = 2.0) -> None:
    """On a cluster: read the slot map and load ``scripts`` on every master now, so that the
    first calls do not spend their short timeouts on it. A cluster that does not answer yet is
    logged, not waited for: the calls do it themselves later. Nothing on a single server."""
    if not isinstance(client, RedisCluster):
        return
    try:
        async with asyncio.timeout(within):
            await client.nodes_manager.initialize()
            for script in scripts:
                await client.script_load(script)
    except Exception as exc:
        log.warning("redis.prepare_failed", error=type(exc).__name__)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def tagged(name: str, cluster: bool) -> str:
    """``name`` as a hash tag on a cluster (every key that starts with it lands in its slot)."""
    return f"{{{name}}}" if cluster else name


async def mget(client: RedisClient, keys: Sequence[str]) -> list[bytes | None]:
    """The values of ``keys`` (None where absent): one MGET, or on a cluster one per slot,
    sent together to the nodes that own them."""
    if isinstance(client, RedisCluster):
        values = await client.mget_nonatomic(list(keys))
    else:
        values = await client.mget(list(keys))
    return cast(list[bytes | None], values)  # no decode_responses: always bytes


async def delete(client: RedisClient, keys: Sequence[str]) -> None:
    """Delete ``keys``: one DEL, or on a cluster one pipeline (a DEL per key, grouped by node)."""
    if not keys:
        return
    if isinstance(client, RedisCluster):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
    else:
        await client.delete(*keys)


async def publish(client: RedisClient, channel: str, message: bytes) -> None:
    """PUBLISH, or on a cluster SPUBLISH (the shard that owns the channel's slot)."""
    if isinstance(client, RedisCluster):
        await client.spublish(channel, message)
    else:
        await client.publish(channel, message)


async def subscribe(client: RedisClient, channel: str) -> PubSub:
    """A subscription to ``channel``. On a cluster: a connection of its own to the master
    that owns the channel's slot, SSUBSCRIBEd (its messages are ``smessage``; when the slot
    leaves that node, Redis sends ``sunsubscribe`` and the caller subscribes again)."""
    if not isinstance(client, RedisCluster):
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
        except BaseException:
            with contextlib.suppress(Exception):  # (a frozen Redis: give up on closing too)
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            raise
        return pubsub
    await client.initialize()  # (reads the slot map on first use only)
    node = client.get_node_from_key(channel)
    if node is None:
        raise redis.ConnectionError("no node serves the invalidation channel's slot")
    kwargs: dict[str, Any] = dict(node.connection_kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k in NODE_OPTIONS}
    if issubclass(node.connection_class, SSLConnection):
        kwargs["ssl"] = True
    # No retries: a lost node must end the subscription at once (the caller then counts as
    # deaf and subscribes again wherever the slot is now), not be reconnected to in a loop.
    node_client = redis.Redis(
        host=node.host, port=int(node.port), retry=Retry(NoBackoff(), 0), **kwargs
    )
    pubsub = node_client.pubsub(ignore_subscribe_messages=False)
    try:
        await pubsub.ssubscribe(channel)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            await asyncio.wait_for(node_client.aclose(), 1.0)
        raise
    pubsub_close = pubsub.aclose

    async def close() -> None:  # the node's client goes with its subscription
        try:
            await pubsub_close()  # type: ignore[no-untyped-call]
        finally:
            await node_client.aclose()

    pubsub.aclose = close  # type: ignore[method-assign]
    return pubsub


async def refresh(client: RedisClient, within: float = 1.0) -> None:
    """Read the cluster's slot map again, after a subscription failed (a failover, a moved
    slot); failures are left to the next attempt. Nothing on a single server."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(Exception):
            async with asyncio.timeout(within):
                await client.nodes_manager.initialize()


# What a node's connection options may pass on to the subscription's own client.
NODE_OPTIONS = frozenset(
    (
        "username",
        "password",
        "db",
        "socket_connect_timeout",
        "ssl",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
        "client_name",
        "credential_provider",
    )
)
