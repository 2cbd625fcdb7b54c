"""The locks (requirements/*.lock) agree with pyproject.toml, with each other and with what is
installed; the libraries whose internals the service uses are checked at start."""

from __future__ import annotations

import subprocess
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import app
from app.core import versions
from app.core.versions import SUPPORTED, UnsupportedDependencyError, check_supported, release
from tests.fixtures.service import ENRICH

ROOT = Path(__file__).resolve().parent.parent
SERVICE_LOCK = ROOT / "requirements" / "service.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(path: Path) -> dict[str, Pin]:
    """Every pin of a lock written by ``uv pip compile --generate-hashes``."""
    entries: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if line[0].isspace():
            entries[-1] += " " + stripped.strip().rstrip("\\").strip()
        else:
            entries.append(stripped.rstrip("\\").strip())
    pins: dict[str, Pin] = {}
    for entry in entries:
        spec, *hash_options = entry.split(" --hash=")
        requirement = Requirement(spec)
        (pinned,) = requirement.specifier
        assert pinned.operator == "==", f"{path.name}: {spec} is not pinned exactly"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = Pin(name, Version(pinned.version), requirement.marker, tuple(hash_options))
    return pins


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(line) for line in lines]


class TestLocks:
    @pytest.mark.parametrize(("lock", "extras"), [(SERVICE_LOCK, []), (DEV_LOCK, ["dev"])])
    def test_every_declared_requirement_is_pinned_within_its_range(
        self, lock: Path, extras: list[str]
    ) -> None:
        pins = read_lock(lock)
        wanted = declared() + [r for extra in extras for r in declared(extra)]
        for requirement in wanted:
            pin = pins.get(canonicalize_name(requirement.name))
            assert pin is not None, f"{requirement} is declared but not in {lock.name}: make lock"
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{lock.name} pins {pin.name}=={pin.version}, outside {requirement}: make lock"
            )

    def test_every_pin_carries_hashes(self) -> None:
        for lock in (SERVICE_LOCK, DEV_LOCK):
            for pin in read_lock(lock).values():
                assert pin.hashes, f"{lock.name}: {pin.name} has no hash"
                assert all(h.startswith("sha256:") for h in pin.hashes)

    def test_the_service_runs_on_the_versions_it_is_tested_with(self) -> None:
        service, dev = read_lock(SERVICE_LOCK), read_lock(DEV_LOCK)
        for name, pin in service.items():
            assert name in dev, f"{name} is in service.lock but not in dev.lock"
            assert dev[name].version == pin.version, (
                f"{name}: service.lock {pin.version}, dev.lock {dev[name].version}"
            )

    def test_the_installed_packages_are_the_locked_ones(self) -> None:
        for pin in read_lock(DEV_LOCK).values():
            if not pin.applies():
                continue
            try:
                installed = Version(version(pin.name))
            except PackageNotFoundError:
                pytest.fail(f"{pin.name} is locked but not installed: make install")
            assert installed == pin.version, (
                f"{pin.name} {installed} is installed, the lock says {pin.version}: make install"
            )

    def test_the_supported_ranges_hold_the_locked_versions(self) -> None:
        pins = read_lock(SERVICE_LOCK)
        for name, (low, high) in SUPPORTED.items():
            locked = release(str(pins[name].version))
            assert release(low) <= locked < release(high), f"{name} lock outside {low}..{high}"


class TestSupportedVersions:
    def test_the_installed_versions_pass(self) -> None:
        check_supported()

    def test_a_version_outside_the_range_names_the_range(self) -> None:
        installed = version("uvicorn")
        with pytest.raises(UnsupportedDependencyError) as raised:
            check_supported({"uvicorn": ("0.1", installed)})
        message = str(raised.value)
        assert f"uvicorn {installed} is installed" in message
        assert f"uvicorn>=0.1,<{installed}" in message

    def test_a_missing_library_is_named(self) -> None:
        with pytest.raises(UnsupportedDependencyError, match="not-a-package is not installed"):
            check_supported({"not-a-package": ("1.0", "2.0")})

    def test_the_app_refuses_to_start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from app.main import create_app

        monkeypatch.setattr(versions, "SUPPORTED", {"redis": ("0.1", "0.2")})
        with pytest.raises(UnsupportedDependencyError, match=r"redis>=0\.1,<0\.2"):
            create_app()

    def test_release_reads_the_numeric_part(self) -> None:
        assert release("8.1.0rc1") == (8, 1, 0)
        assert release("0.54.0") == (0, 54, 0)
        assert release("1.10") < release("1.11") <= release("1.11.0")


class TestVersion:
    def test_enrich_version_prints_the_package_version(self) -> None:
        done = subprocess.run(
            [str(ENRICH), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"enrich {app.__version__}"
        assert version("enrich") == app.__version__
