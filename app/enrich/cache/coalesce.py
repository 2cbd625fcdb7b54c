"""One piece of work for a burst: concurrent callers with the same key share the first one's.

A burst of misses for one guest (a campaign sends everyone to the same page) is one database
query per process, not one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AbandonedError(Exception):
    """The caller doing the shared work was cancelled, while this one was not."""


class Coalescer(Generic[K, V]):
    """Runs ``work`` once per key at a time; callers that come meanwhile wait for its result."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """``work()``'s result (or exception), from this call or one already under way.

        A waiter that is cancelled itself stops waiting and leaves the work running for the
        others; if the caller doing the work is cancelled, the waiters get ``AbandonedError``.
        """
        waiting = self._inflight.get(key)
        if waiting is not None:
            return await _share(waiting)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._inflight[key] = future
        try:
            value = await work()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(value)
            return value
        finally:
            self._inflight.pop(key, None)


async def _share(waiting: asyncio.Future[V]) -> V:
    try:
        return await asyncio.shield(waiting)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if waiting.cancelled() and task is not None and not task.cancelling():
            raise AbandonedError("the shared work was abandoned") from None
        raise


def _consume(future: asyncio.Future[Any]) -> None:
    # Mark the exception retrieved: work nobody else waited for must not warn at exit.
    if not future.cancelled():
        future.exception()
