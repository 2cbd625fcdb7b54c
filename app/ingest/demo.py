"""The demo data set and the demo client that `make run` prints."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import ClientRepository
from app.auth.service import ClientService, verify_secret
from app.config import Settings


async def load_demo(session: AsyncSession, settings: Settings, profiles: int) -> int:
    """Generate the demo profiles (deterministic); returns how many there are."""
    del session, settings, profiles  # the data set arrives with the profiles issue
    return 0


async def ensure_demo_client(
    session: AsyncSession, saved: dict[str, str] | None, name: str, scopes: str
) -> dict[str, str]:
    """Reuse the saved demo client while its secret still works; otherwise make a new one."""
    if saved:
        client = await ClientRepository(session).get(saved.get("client_id", ""))
        if (
            client is not None
            and not client.disabled
            and verify_secret(saved.get("client_secret", ""), client.secret_hash)
        ):
            return {"client_id": client.client_id, "client_secret": saved["client_secret"]}
    client, secret = await ClientService(session).create(name, scopes)
    return {"client_id": client.client_id, "client_secret": secret}
