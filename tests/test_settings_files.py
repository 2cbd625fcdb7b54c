"""The files people configure and run the service with agree with the settings and each other."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from app.core.settings import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = {f"ENRICH_{name.upper()}" for name in Settings.model_fields}
ENV_NAME = re.compile(r"\bENRICH_[A-Z0-9_]+\b")
# Read by the test suite (tests/fixtures/databases.py), not by the service.
TEST_ONLY_NAMES = {
    "ENRICH_TEST_PG_ADMIN_URL",
    "ENRICH_TEST_REDIS_URL",
    "ENRICH_TEST_SCHEMATHESIS_SECONDS",
}


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def env_example() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in read(".env.example").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {line!r}"
        assert name not in entries, f"{name} is listed twice"
        entries[name] = value
    return entries


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(read("docker-compose.yml"))["services"]
    return services


def fenced_lines(markdown: str) -> list[str]:
    """Lines inside ``` blocks."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


class TestEnvExample:
    def test_lists_every_setting_and_nothing_else(self) -> None:
        listed = set(env_example())
        assert listed - SETTING_NAMES == set(), "not settings"
        assert SETTING_NAMES - listed == set(), "settings missing from .env.example"

    def test_each_setting_has_a_comment(self) -> None:
        lines = read(".env.example").splitlines()
        for previous, line in zip(["", *lines[:-1]], lines, strict=True):
            if line.startswith("ENRICH_"):
                assert previous.startswith("# "), line

    def test_a_copy_as_dotenv_changes_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in list(os.environ):
            if name.upper().startswith("ENRICH_"):
                monkeypatch.delenv(name)
        documented = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
        defaults = Settings(_env_file=None)  # type: ignore[call-arg]
        for name in Settings.model_fields:
            value, default = getattr(documented, name), getattr(defaults, name)
            if default is None:
                assert not value, f"{name}: empty means unset"
            else:
                assert value == default, name

    def test_secrets_are_left_empty(self) -> None:
        entries = env_example()
        secrets = [
            name
            for name, field in Settings.model_fields.items()
            if "SecretStr" in str(field.annotation) or field.annotation is SecretStr
        ]
        assert secrets
        for name in secrets:
            assert entries[f"ENRICH_{name.upper()}"] == "", name


class TestDockerCompose:
    def test_sets_only_real_settings(self) -> None:
        names = set(ENV_NAME.findall(read("docker-compose.yml")))
        assert names
        assert names - SETTING_NAMES == set()

    def test_migrations_finish_before_the_api_starts(self) -> None:
        services = compose_services()
        api, migrate = services["api"], services["migrate"]
        assert migrate["command"] == ["enrich", "migrate"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert api["depends_on"]["redis"]["condition"] == "service_healthy"

    def test_migrate_and_api_share_the_database(self) -> None:
        services = compose_services()
        api_env, migrate_env = services["api"]["environment"], services["migrate"]["environment"]
        assert migrate_env["ENRICH_DATABASE_URL"] == api_env["ENRICH_DATABASE_URL"]
        assert "@postgres:5432/" in api_env["ENRICH_DATABASE_URL"]
        assert api_env["ENRICH_REDIS_URL"].startswith("redis://redis:6379")

    def test_every_awaited_service_has_a_healthcheck(self) -> None:
        services = compose_services()
        for name, service in services.items():
            for dependency, rule in service.get("depends_on", {}).items():
                if rule["condition"] == "service_healthy":
                    assert services[dependency]["healthcheck"]["test"], (name, dependency)
        assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


class TestDockerImage:
    def test_sets_only_real_settings(self) -> None:
        names = set(ENV_NAME.findall(read("Dockerfile")))
        assert {"ENRICH_HOST", "ENRICH_PORT"} <= names
        assert names - SETTING_NAMES == set()

    def test_serves_as_a_non_root_user(self) -> None:
        dockerfile = read("Dockerfile")
        users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
        assert users, "no USER: the image would run as root"
        assert users[-1].split(":")[0] not in {"root", "0"}
        assert re.findall(r"^CMD\s+(.+)$", dockerfile, re.M)[-1] == '["enrich", "serve"]'

    def test_healthcheck_calls_the_liveness_route(self) -> None:
        app = create_app(Settings(_env_file=None, environment="test", log_level="WARNING"))  # type: ignore[call-arg]
        assert "/healthz" in app.openapi()["paths"]
        healthcheck = read("Dockerfile").split("HEALTHCHECK", 1)[1].split("\nCMD ", 1)[0]
        assert "/healthz" in healthcheck

    def test_build_context_has_what_the_wheel_needs(self) -> None:
        project = tomllib.loads(read("pyproject.toml"))
        wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
        needed = {"pyproject.toml", project["project"]["readme"], *wheel["packages"]}
        needed |= {path.split("/")[0] for path in wheel.get("force-include", {})}
        allowed = {line[1:] for line in read(".dockerignore").splitlines() if line.startswith("!")}
        assert needed - allowed == set(), ".dockerignore leaves these out"
        copied: set[str] = set()
        for args in re.findall(r"^COPY\s+(?!--from)(.+)$", read("Dockerfile"), re.M):
            copied.update(args.split()[:-1])
        assert needed - copied == set(), "the Dockerfile does not copy these"

    def test_the_phone_data_the_image_drops_is_never_loaded(self) -> None:
        # The Dockerfile removes phonenumbers' geodata, carrierdata and tzdata.
        dropped = re.compile(r"phonenumbers\.(geocoder|carrier|timezone)|import (geocoder|carrier)")
        for path in (ROOT / "app").rglob("*.py"):
            assert not dropped.search(path.read_text(encoding="utf-8")), path
        assert "phonenumbers/geodata" in read("Dockerfile")

    def test_the_stack_stops_within_the_drain_time(self) -> None:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        budget = settings.shutdown_drain_seconds + settings.shutdown_timeout_seconds
        grace = compose_services()["api"]["stop_grace_period"]
        assert grace.endswith("s")
        assert float(grace[:-1]) > budget


class TestReadme:
    def test_ci_runs_the_readme_test_command(self) -> None:
        ci = [line.strip() for line in read(".ci/run").splitlines()]
        command = [line.removeprefix("exec ") for line in ci if line.startswith("exec ")][-1]
        assert command == "make test"
        assert command in fenced_lines(section(read("README.md"), "Quick start"))

    def test_quick_start_commands_are_make_targets(self) -> None:
        quick_start = fenced_lines(section(read("README.md"), "Quick start"))
        targets = set(re.findall(r"^([a-z][a-z0-9-]*):", read("Makefile"), re.M))
        commands = [line.split()[1] for line in quick_start if line.startswith("make ")]
        assert {"run", "test"} <= set(commands)
        assert set(commands) <= targets

    def test_names_only_real_settings(self) -> None:
        names = set(ENV_NAME.findall(read("README.md")))
        assert names - SETTING_NAMES - TEST_ONLY_NAMES == set()
