"""``enrich keys``: rotate the key that signs access tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from app.cli.common import console, run_in_session

if TYPE_CHECKING:  # (for the annotations only: the modules load when a command runs)
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.settings import Settings

app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)


@app.command("rotate")
def rotate() -> None:
    """Make a new signing key active; tokens signed by the old key stay valid until they expire."""
    # start-up: the auth service loads when the command runs, not when ``enrich`` starts.
    from app.auth.signing_keys import KeyService

    async def work(session: AsyncSession, settings: Settings) -> str:
        return await KeyService(session).rotate(
            settings.signing_algorithm, settings.token_ttl_seconds
        )

    kid = run_in_session(work)
    console.print(f"new signing key {kid} is active (workers pick it up within seconds)")
