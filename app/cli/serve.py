"""``enrich serve``: uvicorn with several workers, shared metrics and a graceful stop.

Nothing here imports prometheus_client at module level: the multiprocess directory must be in
the environment before the library is first imported, in this process and in every worker.
The rest of the service loads when the command runs, not when ``enrich`` starts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import MASK, load_settings, mask_url

if TYPE_CHECKING:  # (for the annotations only: the modules load when the command runs)
    from app.core.settings import Settings

# prometheus_client's multiprocess mode reads this when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [ENRICH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ENRICH_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ENRICH_WORKERS]")] = None,
) -> None:
    """Run the API with uvicorn (uvloop and httptools); SIGTERM drains it gracefully."""
    settings = load_settings()
    run_server(settings, host or settings.host, port or settings.port, workers or settings.workers)


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


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as the service will use it; secrets masked, URLs without passwords."""
    # start-up: pydantic loads when the command runs (with the settings).
    from pydantic import SecretStr

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
    # start-up: uvicorn and httptools load when the command runs.
    from app.platform.http import CoalescingHttpToolsProtocol
    from app.platform.http_limits import HttpLimits

    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_header_fields=settings.max_header_fields,
        max_url_bytes=settings.max_url_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )
    return functools.partial(CoalescingHttpToolsProtocol, limits=limits)


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run uvicorn; blocks until the server has stopped."""
    metrics_dir, ours = prepare_metrics_dir()
    # The workers read their settings anew: let them know how many they are (--workers).
    os.environ["ENRICH_WORKERS"] = str(workers)
    settings = settings.model_copy(update={"workers": workers})
    # Imported now, not at start-up: prometheus_client (under app.platform.logging) reads
    # PROMETHEUS_MULTIPROC_DIR once, when first imported, and prepare_metrics_dir sets it.
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
