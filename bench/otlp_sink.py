"""An OTLP/HTTP sink for the benchmarks: answers every POST with 200 and keeps nothing.

    .venv/bin/python bench/otlp_sink.py PORT

What a collector costs the service (a request and an answer per batch), without a collector.
``start`` runs it as a process of its own, so its CPU is not the measured process's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def start() -> tuple[subprocess.Popen[bytes], str]:
    """A sink in its own process, and its traces URL (the caller stops the process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(port)])
    for _ in range(200):  # up to ~10 s for it to listen
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}/v1/traces"


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
