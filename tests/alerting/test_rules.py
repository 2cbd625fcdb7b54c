"""The alert and recording rules (deploy/prometheus) and the dashboard (deploy/grafana), checked
without a live service: promtool's own checks and unit tests, every alert unit-tested and
linked to its runbook entry, and every metric and label they read one the service exports.
The live check, a real Prometheus scraping a real service: test_prometheus.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import app.platform.metrics as metrics
from tests.alerting.rules import (
    DASHBOARD,
    RULE_FILES,
    UNIT_TESTS,
    alerts,
    panel_queries,
    recorded,
    rules,
    runbook_anchors,
    tool,
    unit_tested,
)

SEVERITIES = {"critical", "warning"}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
SELECTOR = re.compile(
    r"\b([a-z_]+:[a-z0-9_:]+|[a-z_][a-z0-9_]*)\s*(\{[^}]*\})?\s*(\[|\)|$|[ ,=<>!*/+-])"
)
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exported() -> dict[str, set[str]]:
    """Every series name the service exports, with the labels it carries."""
    series: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name, labels = value._name, set(value._labelnames)
            kind = value._type
            if kind == "counter":
                series[f"{name}_total"] = labels
            elif kind == "histogram":
                series[f"{name}_bucket"] = labels | {"le"}
                series[f"{name}_count"] = series[f"{name}_sum"] = labels
            else:
                series[name] = labels
    return series


def series_read(expr: str) -> list[tuple[str, set[str]]]:
    """The series names a PromQL expression reads (enrich_* and recorded), with the labels
    its selectors match on."""
    found = []
    for match in SELECTOR.finditer(expr):
        name, matchers = match.group(1), match.group(2) or ""
        if name.startswith("enrich") or name == "up":
            found.append((name, set(MATCHER.findall(matchers))))
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


class TestPromtool:
    def test_the_rule_files_pass_promtool_check(self) -> None:
        result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_the_unit_tests_pass(self) -> None:
        result = run(tool("promtool"), "test", "rules", *map(str, UNIT_TESTS))
        assert result.returncode == 0, result.stdout + result.stderr


class TestAlerts:
    def test_every_alert_has_unit_tests_that_see_it_fire_and_stay_quiet(self) -> None:
        fires, quiet = unit_tested()
        names = {alert.name for alert in alerts()}
        assert names - fires == set(), "alerts no unit test sees firing"
        assert names - quiet == set(), "alerts no unit test sees quiet"
        assert (fires | quiet) - names == set(), "unit tests of alerts that do not exist"

    def test_every_alert_links_its_runbook_entry(self) -> None:
        anchors = runbook_anchors()
        for alert in alerts():
            url = alert.rule["annotations"]["runbook_url"]
            assert url == f"docs/alerts.md#{alert.name.lower()}", alert.name
            assert alert.name.lower() in anchors, f"docs/alerts.md has no entry for {alert.name}"

    def test_the_operations_page_links_every_alert_and_shows_the_dashboard(self) -> None:
        page = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
        for alert in alerts():
            assert f"[{alert.name}](alerts.md#{alert.name.lower()})" in page, alert.name
        assert "](dashboard.png)" in page
        assert (Path(__file__).parents[2] / "docs" / "dashboard.png").stat().st_size > 10_000

    def test_every_alert_says_how_bad_and_what(self) -> None:
        for alert in alerts():
            assert alert.rule["labels"]["severity"] in SEVERITIES, alert.name
            assert {"summary", "description"} <= set(alert.rule["annotations"]), alert.name

    def test_alert_names_are_unique(self) -> None:
        names = [alert.name for alert in alerts()]
        assert len(names) == len(set(names))


class TestWhatTheRulesRead:
    def test_every_series_is_exported_or_recorded_with_those_labels(self) -> None:
        known = exported()
        own = recorded()
        for rule in rules():
            for name, labels in series_read(rule["expr"]):
                if name == "up":
                    continue
                if ":" in name:
                    assert name in own, f"{name}: no recording rule makes it"
                    continue
                assert name in known, f"{name}: the service exports no such series"
                assert labels <= known[name] | TARGET_LABELS, f"{name} has no label {labels}"

    def test_every_dashboard_query_reads_what_exists(self) -> None:
        known = exported()
        own = recorded()
        queries = panel_queries()
        assert queries, f"no queries in {DASHBOARD}"
        for title, expr in queries:
            read = series_read(expr)
            assert read, f"{title}: reads no enrich series"
            for name, labels in read:
                if ":" in name:
                    assert name in own, f"{title}: {name}: no recording rule makes it"
                else:
                    assert name in known, f"{title}: {name}: the service exports no such series"
                    assert labels <= known[name] | TARGET_LABELS, f"{title}: {name} {labels}"
