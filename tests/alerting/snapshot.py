"""A picture of the Grafana dashboard drawn from a live Prometheus: every panel of
``deploy/grafana/enrich.json`` at its place on the grid, its queries' series over the run, as
an HTML page of SVG charts that Chromium (headless) saves as a PNG.

Grafana itself is not a Debian package, so this is how docs/alerts.md shows the dashboard:
the live Prometheus test draws it when asked (``ENRICH_DASHBOARD_SNAPSHOT=docs/dashboard.png``);
a normal run writes nothing.
"""

from __future__ import annotations

import asyncio
import html
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.alerting.rules import GRAFANA_VARIABLES, load_dashboard
from tests.qa.server import chromium

COLUMN = 64  # pixels per grid column (24 columns: 1536 px)
ROW = 30  # pixels per grid row
COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
STEP_SECONDS = 2


def _everything() -> list[dict[str, Any]]:
    """Every panel, rows (the section titles) included, with the panels a row holds."""
    found: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _expr(target: dict[str, Any]) -> str:
    expr: str = target["expr"]
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _legend(target: dict[str, Any], labels: dict[str, str]) -> str:
    fmt = target.get("legendFormat") or ", ".join(f"{k}={v}" for k, v in labels.items())
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt)


async def _series(
    http: httpx.AsyncClient, url: str, expr: str, start: float, end: float
) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {
        "query": expr,
        "start": start,
        "end": end,
        "step": STEP_SECONDS,
    }
    response = await http.get(f"{url}/api/v1/query_range", params=params)
    assert response.status_code == 200, (expr, response.text)
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def _number(value: float, unit: str | None) -> str:
    if unit == "percentunit":
        return f"{value * 100:.2f} %"
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    return f"{value:.3g}"


def _chart(lines: list[tuple[str, list[tuple[float, float]]]], width: int, height: int) -> str:
    points = [p for _, values in lines for p in values]
    if not points:
        return '<text x="10" y="40" fill="#999">no data</text>'
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(v for _, v in points) or 1.0
    plot_h = height - 70
    parts = [f'<text x="4" y="34" fill="#999" font-size="10">{_number(top, None)}</text>']
    for n, (name, values) in enumerate(lines[:8]):
        xy = " ".join(
            f"{40 + (t - t0) / max(t1 - t0, 1) * (width - 50):.1f},"
            f"{30 + plot_h - v / top * plot_h:.1f}"
            for t, v in values
        )
        colour = COLOURS[n % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{xy}"/>')
        parts.append(
            f'<text x="{10 + (n % 3) * (width // 3)}" y="{height - 22 + (n // 3) * 11}" '
            f'fill="{colour}" font-size="10">{html.escape(name[:40])}</text>'
        )
    return "".join(parts)


async def _panel(
    panel: dict[str, Any], http: httpx.AsyncClient, url: str, start: float, end: float
) -> str:
    grid = panel["gridPos"]
    x, y, w, h = grid["x"] * COLUMN, grid["y"] * ROW, grid["w"] * COLUMN, grid["h"] * ROW
    title = html.escape(panel.get("title", ""))
    if panel["type"] == "row":
        return (
            f'<div style="position:absolute;left:{x}px;top:{y}px;width:{w}px;'
            f'font:bold 15px sans-serif;color:#ddd;padding:6px">{title}</div>'
        )
    lines: list[tuple[str, list[tuple[float, float]]]] = []
    for target in panel.get("targets", []):
        for series in await _series(http, url, _expr(target), start, end):
            values = [(float(t), float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
            lines.append((_legend(target, series["metric"]), values))
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if panel["type"] == "stat":
        last = [values[-1][1] for _, values in lines if values]
        body = (
            f'<text x="{w // 2}" y="{h // 2 + 10}" fill="#7eb26d" font-size="34" '
            f'text-anchor="middle">{_number(last[0], unit) if last else "no data"}</text>'
        )
    else:
        body = _chart(lines, w - 8, h - 8)
    return (
        f'<svg style="position:absolute;left:{x + 4}px;top:{y + 4}px" width="{w - 8}" '
        f'height="{h - 8}"><rect width="100%" height="100%" fill="#181b1f" stroke="#2c3235"/>'
        f'<text x="8" y="18" fill="#ccc" font-size="12">{title}</text>{body}</svg>'
    )


async def snapshot(prometheus_url: str, start: float, out: Path, workdir: Path) -> None:
    """Draw every panel from ``start`` to now and save the page as ``out`` (PNG)."""
    end = time.time()
    async with httpx.AsyncClient(timeout=30) as http:
        drawn = [await _panel(p, http, prometheus_url, start, end) for p in _everything()]
    height = max((p["gridPos"]["y"] + p["gridPos"]["h"]) * ROW for p in _everything())
    page = workdir / "dashboard.html"
    page.write_text(
        f'<html><body style="margin:0;background:#111217;width:{24 * COLUMN}px;'
        f'height:{height}px;position:relative;font-family:sans-serif">{"".join(drawn)}'
        "</body></html>"
    )
    await asyncio.to_thread(_screenshot, page, out, height)


def _screenshot(page: Path, out: Path, height: int) -> None:
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={page.parent / 'chromium'}",
            f"--window-size={24 * COLUMN},{height}",
            f"--screenshot={out.resolve()}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
