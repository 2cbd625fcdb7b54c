"""Import throughput: N profiles from a file into a fresh PostgreSQL database.

    .venv/bin/python bench/import_profiles.py [--profiles 1000000] [--format ndjson|csv]
        [--shape full|crm] [--batch-size 10000] [--database NAME] [--keep] [--again]

Generates the file once (bench/out/, the demo generator's profiles), creates and migrates a
fresh database, and loads the file through ``app.ingest.importer.import_file``, the code path
of ``enrich import`` minus the progress bar. Prints profiles per second. ``--again`` loads the
same file a second time (every record unchanged); ``--keep`` leaves the database in place
(bench/enrich_pg.py uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from pathlib import Path

import asyncpg
from common import create_database, data_file, drop_database, pg_url

from app.core.settings import Settings
from app.ingest.importer import ImportReport, import_file


def show(label: str, report: ImportReport, cpu: CpuMeter) -> None:
    rows = max(report.rows, 1)
    print(
        f"{label}: {report.rows:,} rows in {report.seconds:.1f} s = {report.rate:,.0f} profiles/s "
        f"({report.created:,} created, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged, {report.failed:,} failed)\n"
        f"  CPU per profile: importer {cpu.python / rows * 1e6:.0f} us, "
        f"reader process {cpu.children / rows * 1e6:.0f} us, "
        f"PostgreSQL backend {cpu.backend / rows * 1e6:.0f} us; "
        f"load average before {cpu.load_before:.2f}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used by this process and by the database's backends while a load runs.

    The machine is shared, so wall-clock rates move with whatever else runs; CPU time per
    profile says what the load itself costs.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.python = 0.0
        self.children = 0.0  # the reader process (counted once it has been waited for)
        self.backend = 0.0
        self.load_before = os.getloadavg()[0]
        self._seen: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._start = 0.0

    async def __aenter__(self) -> CpuMeter:
        self._start = time.process_time()
        self._children_start = children_cpu()
        self._connection = await asyncpg.connect(pg_url(self.database))
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        own = self._connection.get_server_pid()
        while True:
            pids = await self._connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
                self.database,
                own,
            )
            for (pid,) in pids:
                try:
                    used = cpu_seconds(pid)
                except OSError:
                    continue
                self._seen.setdefault(pid, used)
                self._last[pid] = used
            await asyncio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._connection.close()
        self.python = time.process_time() - self._start
        self.children = children_cpu() - self._children_start
        # A backend first seen mid-load misses its first 0.2 s at most.
        self.backend = sum(self._last[pid] - self._seen[pid] for pid in self._seen)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    parser.add_argument(
        "--shape",
        choices=("full", "crm"),
        default="full",
        help="full: demo profiles with 5-10 recommendations; crm: the same without them",
    )
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--database", default="enrich_bench_import")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--again", action="store_true", help="import the file a second time")
    args = parser.parse_args()

    path = data_file(args.profiles, args.format, args.shape)
    url = await create_database(args.database)
    settings = Settings(_env_file=None, database_url=url, log_level="WARNING")  # type: ignore[call-arg]
    print(
        f"importing {path.name} ({path.stat().st_size / 1e6:.0f} MB) into {args.database}, "
        f"batches of {args.batch_size:,}"
    )
    try:
        async with CpuMeter(args.database) as cpu:
            report = await import_file(path, settings, batch_size=args.batch_size)
        show("first load ", report, cpu)
        if args.again:
            async with CpuMeter(args.database) as cpu:
                again = await import_file(path, settings, batch_size=args.batch_size)
            show("second load", again, cpu)
        if args.keep:  # ready for reading (bench/enrich_pg.py): fresh statistics, all-visible
            connection = await asyncpg.connect(url)
            try:
                await connection.execute("VACUUM ANALYZE")
            finally:
                await connection.close()
    finally:
        if not args.keep:
            await drop_database(args.database)


if __name__ == "__main__":
    asyncio.run(main())
