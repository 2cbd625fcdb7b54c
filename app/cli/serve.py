"""``enrich serve``: uvicorn with several workers, shared metrics and a graceful stop.

Nothing here imports prometheus_client at module level: the multiprocess directory must be in
the environment before the library is first imported, in this process and in every worker.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.core.settings import Settings

# prometheus_client's multiprocess mode reads this when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MASK = "**********"


def prepare_metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied; True when it is ours to remove after."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # samples of an earlier run would be summed in
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="enrich-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def mask_url(url: str) -> str:
    """The URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return MASK


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as the service will use it; secrets masked, URLs without passwords."""
    shown: dict[str, Any] = {}
    for name, value in settings:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            shown[name] = mask_url(secret) if name.endswith("_url") else MASK
        elif name.endswith("_url") and isinstance(value, str) and "@" in value:
            shown[name] = mask_url(value)
        else:
            shown[name] = value
    return shown


def http_protocol(settings: Settings) -> Callable[..., asyncio.Protocol]:
    """The HTTP protocol of every worker: httptools, one write per response, the settings'
    limits. A ``partial`` of the class (uvicorn pickles it for its worker processes)."""
    from app.platform.http import CoalescingHttpToolsProtocol, HttpLimits

    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_header_fields=settings.max_header_fields,
        max_url_bytes=settings.max_url_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )
    return functools.partial(CoalescingHttpToolsProtocol, limits=limits)


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run uvicorn; blocks until the server has stopped."""
    metrics_dir, ours = prepare_metrics_dir()
    # The workers read their settings anew: let them know how many they are (--workers).
    os.environ["ENRICH_WORKERS"] = str(workers)
    settings = settings.model_copy(update={"workers": workers})
    import structlog
    import uvicorn

    from app.platform.logging import configure_logging

    configure_logging(settings)
    structlog.get_logger(__name__).info(
        "serve.starting",
        host=host,
        port=port,
        workers=workers,
        metrics_dir=str(metrics_dir),
        settings=effective_settings(settings),
    )
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=http_protocol(settings),  # type: ignore[arg-type]  # a partial of the class
            timeout_keep_alive=settings.keep_alive_seconds,
            access_log=False,  # the service writes its own (see AccessMiddleware)
            proxy_headers=False,  # X-Forwarded-For is read from ENRICH_TRUSTED_PROXIES only
            timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
            log_level="warning",
        )
    finally:
        if ours:
            shutil.rmtree(metrics_dir, ignore_errors=True)
