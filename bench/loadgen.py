"""A small HTTP/1.1 load generator: open loop at a fixed rate, or closed loop at saturation.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8000/v1/enrich --token T \
        --bodies bodies.ndjson --rate 500 --seconds 20
    .venv/bin/python bench/loadgen.py ... --closed 32 --seconds 10

Open loop: request i is due at start + i / rate whatever happened before, and its latency is
counted from that due time, so a stalled server shows up in the percentiles instead of
silently lowering the offered rate (no coordinated omission). Each request takes the next
body from ``--bodies`` (one JSON body a line), so the server sees a mix of guests. Keep-alive
connections are opened as needed. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover - plain asyncio works too, a little slower
    uvloop = None


Answer = tuple[int, str]  # the status, and the X-Cache header ("" when none)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, payload: bytes) -> Answer:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        cache = ""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-cache":
                cache = value.strip().decode()
        if length:
            await self.reader.readexactly(length)
        return status, cache


class Client:
    def __init__(self, url: str, token: str, max_connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.token = token
        self.idle: list[Connection] = []
        self.slots = asyncio.Semaphore(max_connections)

    def payload(self, body: bytes, path: str | None = None, token: str | None = None) -> bytes:
        """A POST of ``body`` to the client's path (or ``path``), with its token (or ``token``)."""
        return (
            f"POST {path or self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token or self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def send(self, payload: bytes) -> Answer:
        async with self.slots:
            connection = self.idle.pop() if self.idle else None
            if connection is not None:
                try:
                    answer = await connection.request(payload)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # The server closed an idle keep-alive connection: as any client, retry
                    # once on a new one (the latency still counts from the due time).
                    connection.writer.close()
                else:
                    self.idle.append(connection)
                    return answer
            reader, writer = await asyncio.open_connection(self.host, self.port)
            connection = Connection(reader, writer)
            try:
                answer = await connection.request(payload)
            except BaseException:
                writer.close()
                raise
            self.idle.append(connection)
            return answer


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def open_loop(client: Client, payloads: list[bytes], rate: float, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    cycle = itertools.cycle(payloads)

    async def one(due: float, payload: bytes) -> None:
        try:
            status, _ = await client.send(payload)
        except Exception as exc:
            errors.append(type(exc).__name__)
            return
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, next(cycle)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return summary("open", latencies, statuses, errors, elapsed, offered=rate)


async def closed_loop(client: Client, payloads: list[bytes], workers: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    cycle = itertools.cycle(payloads)
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                status, _ = await client.send(next(cycle))
            except Exception as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - began)
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return summary("closed", latencies, statuses, errors, time.perf_counter() - start)


def summary(
    mode: str,
    latencies: list[float],
    statuses: dict[int, int],
    errors: list[str],
    elapsed: float,
    offered: float | None = None,
) -> dict:
    ms = [value * 1000 for value in latencies]
    return {
        "mode": mode,
        "offered_rps": offered,
        "achieved_rps": round(len(ms) / elapsed, 1),
        "requests": len(ms),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "statuses": statuses,
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "p999_ms": round(percentile(ms, 0.999), 2),
        "max_ms": round(max(ms), 2) if ms else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--bodies", required=True, help="a file with one JSON body a line")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--closed", type=int, default=0, help="closed loop with N workers")
    parser.add_argument("--max-connections", type=int, default=64)
    args = parser.parse_args()

    with open(args.bodies, "rb") as handle:
        bodies = [line.strip() for line in handle if line.strip()]
    if uvloop is not None:
        uvloop.install()
    print(json.dumps(asyncio.run(run(args, bodies))))


async def run(args: argparse.Namespace, bodies: list[bytes]) -> dict:
    client = Client(args.url, args.token, args.max_connections)
    payloads = [client.payload(body) for body in bodies]
    if args.closed:
        return await closed_loop(client, payloads, args.closed, args.seconds)
    return await open_loop(client, payloads, args.rate, args.seconds)


if __name__ == "__main__":
    main()
