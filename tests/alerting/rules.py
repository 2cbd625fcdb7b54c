"""What the alerting tests read: the rule files, their unit tests, the dashboard, the runbook."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.service import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(PROMETHEUS_DIR.glob("*.yml"))
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "enrich.json"
RUNBOOK = ROOT / "docs" / "alerts.md"
# Grafana's variables in the dashboard's queries, and what the tests put in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}


@dataclass(frozen=True)
class Alert:
    name: str
    rule: dict[str, Any]
    file: Path


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"]
    ]


def alerts() -> list[Alert]:
    return [
        Alert(rule["alert"], rule, path)
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def unit_tested() -> tuple[set[str], set[str]]:
    """The alerts the promtool unit tests expect to fire at least once, and to stay quiet."""
    fires, quiet = set(), set()
    for path in UNIT_TESTS:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    return fires, quiet


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings (lower case, punctuation dropped)."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        found.extend(panel.get("panels", [panel]))  # rows may hold their panels
    return [panel for panel in found if panel.get("type") != "row"]


def load_dashboard() -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) for every target."""
    queries = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def tool(name: str) -> str:
    """A Prometheus binary (Debian's ``prometheus`` package); missing fails the test."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert path is not None, f"{name} not found: apt-get install prometheus (.ci/run does)"
    return path
