"""Apply Alembic migrations from code (the CLI and the tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.core.settings import Settings


def _migrations_dir(settings: Settings) -> Path:
    if settings.migrations_dir:
        return Path(settings.migrations_dir)
    package = Path(__file__).resolve().parent.parent  # app/
    # migrations/ beside app/ in the source tree; app/_migrations in the wheel.
    for candidate in (package.parent / "migrations", package / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("migrations not found; set ENRICH_MIGRATIONS_DIR")


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir(settings)))
    config.attributes["database_url"] = settings.database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to ``revision``; blocks, so call it off the event loop."""
    command.upgrade(alembic_config(settings), revision)
