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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import MASK, load_settings, mask_url

if TYPE_CHECKING:  # (for the annotations only: the modules load when the command runs)
    from app.core.settings import Settings

# prometheus_client's multiprocess mode reads this when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


CLIENT_CERT_MODES = ("none", "optional", "required")


@dataclass(frozen=True)
class TlsFiles:
    """TLS terminated by the service itself (off by default: usually the proxy's job)."""

    certfile: str
    keyfile: str | None = None
    ca_certs: str | None = None  # the CAs client certificates must chain to
    client_cert: str = "none"  # none, optional or required

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.run's ssl_* arguments."""
        import ssl  # start-up: loaded when the command runs

        requirement = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[self.client_cert]
        return {
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_ca_certs": self.ca_certs,
            "ssl_cert_reqs": int(requirement),
        }


def tls_files(
    certfile: str | None, keyfile: str | None, ca_certs: str | None, client_cert: str
) -> TlsFiles | None:
    """The TLS options, checked: None without a certificate; exit 2 on a contradiction."""
    if client_cert not in CLIENT_CERT_MODES:
        raise typer.BadParameter(
            f"must be one of {', '.join(CLIENT_CERT_MODES)}", param_hint="--ssl-client-cert"
        )
    if certfile is None:
        if keyfile or ca_certs or client_cert != "none":
            raise typer.BadParameter("TLS options need a certificate", param_hint="--ssl-certfile")
        return None
    if client_cert != "none" and not ca_certs:
        raise typer.BadParameter(
            "client certificates need the CAs to check them against", param_hint="--ssl-ca-certs"
        )
    for path in (certfile, keyfile, ca_certs):
        if path is not None and not Path(path).is_file():
            raise typer.BadParameter(f"no such file: {path}")
    return TlsFiles(certfile, keyfile, ca_certs, client_cert)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [ENRICH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ENRICH_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ENRICH_WORKERS]")] = None,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM)", envvar="ENRICH_SSL_CERTFILE"),
    ] = None,
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(
            help="Its private key (PEM), if not in the certfile", envvar="ENRICH_SSL_KEYFILE"
        ),
    ] = None,
    ssl_ca_certs: Annotated[
        str | None,
        typer.Option(
            help="CAs that client certificates must chain to", envvar="ENRICH_SSL_CA_CERTS"
        ),
    ] = None,
    ssl_client_cert: Annotated[
        str,
        typer.Option(
            help="Client certificates: none, optional or required", envvar="ENRICH_SSL_CLIENT_CERT"
        ),
    ] = "none",
) -> None:
    """Run the API with uvicorn (uvloop and httptools); SIGTERM drains it gracefully.

    TLS is off unless --ssl-certfile is given (a proxy in front usually terminates it)."""
    tls = tls_files(ssl_certfile, ssl_keyfile, ssl_ca_certs, ssl_client_cert)
    if tls is not None and tls.ca_certs:
        # The CAs the handshake checks are, unless set apart, those of tls_client_auth.
        os.environ.setdefault("ENRICH_CLIENT_CA_CERTS", tls.ca_certs)
    settings = load_settings()
    run_server(
        settings, host or settings.host, port or settings.port, workers or settings.workers, tls
    )


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


def run_server(
    settings: Settings, host: str, port: int, workers: int, tls: TlsFiles | None = None
) -> None:
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
        tls=None if tls is None else tls.client_cert,
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
            **(tls.uvicorn_options() if tls is not None else {}),
        )
    finally:
        if ours:
            shutil.rmtree(metrics_dir, ignore_errors=True)
