"""Shared by the benchmarks: data files, throwaway PostgreSQL databases, timing output."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
import time
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.migrate import upgrade
from app.core.settings import Settings
from app.ingest.demo import demo_profile

OUT = Path(__file__).resolve().parent / "out"
PG_ADMIN_URL = os.environ.get(
    "ENRICH_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CSV_TRAITS = (
    "first_name last_name tier loyalty_points preferred_channel city state country language "
    "marketing_opt_in member_since favorite_category"
).split()
CSV_METRICS = (
    "lifetime_value order_count last_order_at average_order_value visits_30d churn_risk"
).split()


def pg_url(database: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{database}"


def bench_profile(number: int, shape: str) -> dict[str, object]:
    """Demo profile ``number``; the "crm" shape leaves out the recommendations."""
    document = demo_profile(number)
    if shape == "crm":
        del document["recommendations"]
    return document


def data_file(profiles: int, file_format: str, shape: str = "full") -> Path:
    """The demo generator's first ``profiles`` profiles as a file (made once, then reused)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"profiles-{shape}-{profiles}.{file_format}"
    if path.exists():
        return path
    started = time.perf_counter()
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        if file_format == "ndjson":
            for number in range(profiles):
                handle.write(orjson.dumps(bench_profile(number, shape)) + b"\n")
        else:
            _write_csv(handle, profiles, shape)
    partial.rename(path)
    print(
        f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return path


def _write_csv(handle: object, profiles: int, shape: str) -> None:
    import io

    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")  # type: ignore[arg-type]
    writer = csv.writer(text)
    id_types = ["email", "phone", "crm_id", "guest_ref"]
    writer.writerow(
        id_types
        + [f"traits.{t}" for t in CSV_TRAITS]
        + [f"metrics.{m}" for m in CSV_METRICS]
        + ["segments", "recommendations", "source"]
    )
    for number in range(profiles):
        doc = bench_profile(number, shape)
        traits, metrics = doc["traits"], doc["metrics"]
        writer.writerow(
            [doc["identifiers"].get(t, "") for t in id_types]
            + [_cell(traits.get(t)) for t in CSV_TRAITS]
            + [_cell(metrics.get(m)) for m in CSV_METRICS]
            + [
                ";".join(doc["segments"]),
                orjson.dumps(doc.get("recommendations", [])).decode(),
                doc["source"],
            ]
        )
    text.flush()
    text.detach()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def create_database(name: str) -> str:
    """A fresh, migrated database ``name`` (dropped first if it exists)."""
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = pg_url(name)
    await asyncio.to_thread(upgrade, Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    return url


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def database_exists(name: str) -> bool:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await admin.close()
