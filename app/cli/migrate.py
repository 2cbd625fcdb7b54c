"""``enrich migrate``: bring the database's schema to a revision (Alembic)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import console, load_settings, mask_url


def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply database migrations (Alembic)."""
    # start-up: Alembic and SQLAlchemy load when the command runs.
    from app.core.migrate import upgrade

    settings = load_settings()
    upgrade(settings, revision)
    console.print(f"database at {revision}: {mask_url(settings.database_url)}")
