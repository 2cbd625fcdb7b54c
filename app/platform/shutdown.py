"""Graceful shutdown: on SIGTERM, readiness turns 503 first, then the server drains.

uvicorn stops accepting connections as soon as it gets SIGTERM. A load balancer that still
thinks the worker is ready would send it requests that fail in the meantime, so the worker
first answers 503 at /readyz for ``ENRICH_SHUTDOWN_DRAIN_SECONDS`` while it keeps serving, and
only then hands the signal to uvicorn, which closes the listener and waits (at most
``ENRICH_SHUTDOWN_TIMEOUT_SECONDS``) for the requests in flight. A worker whose /readyz nobody
has asked (no load balancer watches it) has nobody to tell and stops at once, as does a
second SIGTERM or a SIGINT (Ctrl+C).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Drain:
    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.draining = False
        self.probed = False  # /readyz was asked at least once
        self._previous: Any = None

    def install(self) -> None:
        """Wrap the SIGTERM handler the server installed (uvicorn's, from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # no server's handler to defer to (an ASGI test client, a script)
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.draining or not self.probed or self.drain_seconds <= 0:
                previous(signum, frame)
                return
            self.draining = True
            log.warning("shutdown.draining", seconds=self.drain_seconds)
            loop.call_soon_threadsafe(loop.call_later, self.drain_seconds, previous, signum, None)

        self._previous = previous
        signal.signal(signal.SIGTERM, on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
