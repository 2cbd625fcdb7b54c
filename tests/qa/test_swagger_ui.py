"""Swagger UI in a real browser: Authorize with client credentials, run enrich, read found."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.qa.server import NODE_BIN, ROOT, LiveServer, chromium, require

SCRIPT = Path(__file__).with_name("swagger_ui.mjs")


class TestSwaggerUi:
    def test_the_docs_pages_load_nothing_from_another_host(self, sqlite_server: LiveServer) -> None:
        for page in ("/docs", "/redoc"):
            html = httpx.get(sqlite_server.base_url + page).text
            sources = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert sources, html
            external = [s for s in sources if re.match(r"(https?:)?//", s)]
            assert external == [], f"{page} needs the internet: {external}"
            for source in sources:
                asset = httpx.get(sqlite_server.base_url + source)
                assert asset.status_code == 200, source

    def test_authorize_and_run_enrich_for_the_demo_guest(
        self, sqlite_server: LiveServer, artifacts: Path, tmp_path: Path
    ) -> None:
        require(NODE_BIN.parent / "playwright-core", "run `npm ci` in the repository root")
        # Not docs/swagger-ui.png: a test writes no tracked file (docs/qa.md says how to
        # refresh that one from this).
        screenshot = artifacts / "swagger-ui.png"
        failure = artifacts / "swagger-ui-failure.png"
        screenshot.unlink(missing_ok=True)
        failure.unlink(missing_ok=True)
        done = subprocess.run(
            ["node", str(SCRIPT)],
            env={
                **sqlite_server.env,
                "BASE_URL": sqlite_server.base_url,
                "CLIENT_ID": sqlite_server.client_id,
                "CLIENT_SECRET": sqlite_server.client_secret,
                "CHROMIUM": chromium(),
                "USER_DATA_DIR": str(tmp_path / "chromium-profile"),
                "SCREENSHOT": str(screenshot),
                "FAILURE_SCREENSHOT": str(failure),
            },
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, (
            f"{done.stdout}\n{done.stderr}\nscreenshot of the failure: {failure}"
        )
        assert "answered 200" in done.stdout
        assert "redoc rendered" in done.stdout
        assert screenshot.stat().st_size > 10_000
