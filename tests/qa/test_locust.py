"""The Locust kit: a 15-second headless smoke against a live server, with zero failures."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from tests.fixtures.service import RecordProperty
from tests.qa.server import BIN, DEMO_PROFILES, ROOT, LiveServer, require

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
EXPECTED = {
    "POST /oauth/token",
    "POST /v1/enrich [email]",
    "POST /v1/enrich [guest_ref]",
    "POST /v1/enrich [unknown]",
    "POST /v1/events",
    "PATCH /v1/profiles/email/[email]",
}


class TestLocustSmoke:
    def test_fifteen_seconds_of_the_production_mix_without_a_failure(
        self, sqlite_server: LiveServer, artifacts: Path, record_property: RecordProperty
    ) -> None:
        out = sqlite_server.workdir / "locust"
        out.mkdir()
        done = sqlite_server.run(
            str(require(BIN / "locust", "pip install -e '.[dev]'")),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "15s",
            "--host",
            sqlite_server.base_url,
            f"--client-id={sqlite_server.client_id}",
            f"--client-secret={sqlite_server.client_secret}",
            "--profiles",
            str(DEMO_PROFILES),
            "--target-rps",
            "60",
            "--csv",
            str(out / "smoke"),
            "--html",
            str(out / "smoke.html"),
            "--only-summary",
            timeout=120,
        )
        if done.returncode != 0:
            shutil.copytree(out, artifacts / "locust", dirs_exist_ok=True)
        assert done.returncode == 0, done.stderr[-5000:]
        with (out / "smoke_stats.csv").open() as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
        total = rows.pop("Aggregated")
        # How many requests 15 s held depends on the machine: reported, not asserted (the
        # service's speed is measured in bench/). That it ran the whole mix is asserted.
        record_property("requests", int(total["Request Count"]))
        assert int(total["Failure Count"]) == 0, total
        assert EXPECTED <= set(rows), sorted(rows)
        assert all(int(rows[name]["Request Count"]) > 0 for name in EXPECTED), rows
        assert (out / "smoke.html").stat().st_size > 10_000
