"""One request on a new connection to an app host, and which of its workers answered it.

The connection is still open when the answer is read, so its server end is in the host's TCP
table (``/proc/<worker>/net/tcp`` shows the worker's namespace), and the worker holding that
socket is the one that answered.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.apps import APP_PORT, AppHost


@dataclass
class Answer:
    status: int
    body: Any
    host: str | None  # the app host that answered (directly, or X-Served-By)
    worker: int | None  # its worker's pid, when asked directly


def _hex(address: str, port: int) -> str:
    (number,) = struct.unpack("<I", socket.inet_aton(address))
    return f"{number:08X}:{port:04X}"


def worker_of(app: AppHost, client: tuple[str, int]) -> int | None:
    """The worker of ``app`` holding the server end of the connection from ``client``."""
    workers = app.workers()
    local, remote = _hex(app.host.address, APP_PORT), _hex(*client)
    inode = None
    for pid in workers:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    inode = fields[9]
            break  # one worker's view is the namespace's
    if inode is None:
        return None
    for pid in workers:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


async def fresh(
    url: str, method: str, path: str, headers: dict[str, str], app: AppHost | None = None, **kw: Any
) -> Answer:
    """``method path`` on a new connection to ``url``; with ``app``, which worker answered."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.request(method, path, headers=headers, **kw)
        worker = None
        if app is not None:
            stream = response.extensions["network_stream"]
            worker = worker_of(app, stream.get_extra_info("client_addr"))
        body = response.json() if response.content else None
        host = app.name if app is not None else response.headers.get("x-served-by")
        return Answer(response.status_code, body, host, worker)
