"""View administration (``enrich views``): create a version, list, show, retire, and give a
client a default view; every change audited in its own transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import log as audit
from app.auth.clients import ClientService
from app.core.errors import AppError, NotFoundError
from app.core.models import Client, ViewVersion
from app.enrich.views.definition import ViewError, ViewRef, check_name, normalize, parse_ref
from app.enrich.views.repository import ViewRepository
from app.profiles.consent import check_purposes

# Live versions a deployment may hold: every worker keeps them all compiled in memory.
MAX_LIVE_VERSIONS = 500


class ViewService:
    def __init__(self, session: AsyncSession) -> None:
        self.views = ViewRepository(session)
        self.clients = ClientService(session)
        self.audit = audit.AuditLog(session)

    async def create(self, name: str, definition: dict[str, Any]) -> ViewVersion:
        """The view's next version (1 for a new name); earlier versions stay as they were."""
        name = check_name(name)
        normal = normalize(definition)
        if await self.views.live_count() >= MAX_LIVE_VERSIONS:
            raise ViewError(
                f"there are {MAX_LIVE_VERSIONS} live view versions already; retire some first"
            )
        existing = await self.views.versions(name)
        version = existing[-1].version + 1 if existing else 1
        row = await self.views.add(name, version, normal)
        await self.audit.record(audit.VIEW_CREATED, f"{name}@{version}", definition=normal)
        return row

    async def ensure(self, name: str, definition: dict[str, Any]) -> ViewVersion:
        """The latest live version of ``name`` when it says ``definition``, else a new one."""
        name, normal = check_name(name), normalize(definition)
        live = [row for row in await self.views.versions(name) if row.retired_at is None]
        if live and live[-1].definition == normal:
            return live[-1]
        return await self.create(name, normal)

    async def get(self, ref: ViewRef) -> ViewVersion:
        """The version ``ref`` names (the latest live one for a name alone; retired ones too
        when named with their version)."""
        name, version = ref
        versions = await self.views.versions(name)
        if version is None:
            live = [row for row in versions if row.retired_at is None]
            if live:
                return live[-1]
            if versions:
                raise AppError(f"every version of view {name!r} is retired", status_code=410)
        else:
            for row in versions:
                if row.version == version:
                    return row
        raise NotFoundError(f"no view {name if version is None else f'{name}@{version}'}")

    async def find(self, text: str) -> ViewVersion:
        """``get`` for a reference as written (``name`` or ``name@3``)."""
        return await self.get(_ref(text))

    async def listed(self, include_retired: bool = False) -> list[ViewVersion]:
        rows = await self.views.all()
        return rows if include_retired else [row for row in rows if row.retired_at is None]

    async def retire(self, text: str) -> list[int]:
        """Retire one version (``name@3``) or every live version of a name; the versions
        retired now. Every worker refuses them within a second."""
        name, version = _ref(text)
        rows = await self.views.versions(name)
        if not rows:
            raise NotFoundError(f"no view {name}")
        live = [row.version for row in rows if row.retired_at is None]
        chosen = live if version is None else [v for v in live if v == version]
        if version is not None and version not in {row.version for row in rows}:
            raise NotFoundError(f"no view {name}@{version}")
        if chosen:
            await self.views.retire(name, chosen)
            await self.audit.record(audit.VIEW_RETIRED, name, versions=chosen)
        return chosen

    async def assign(self, client_id: str, text: str | None) -> Client:
        """Give the client a default view (``name``: the latest live version at each request;
        ``name@3``: pinned), or none (``text`` None)."""
        client = await self.clients.get(client_id)
        shown = None
        if text is not None:
            ref = _ref(text)
            if (await self.get(ref)).retired_at is not None:
                raise AppError(f"view {text.strip()} is retired", status_code=410)
            shown = ref[0] if ref[1] is None else f"{ref[0]}@{ref[1]}"
        client.default_view = shown
        await self.audit.record(audit.CLIENT_VIEW_SET, client_id, view=shown)
        return client

    async def assign_purpose(self, client_id: str, purpose: str | None) -> Client:
        """Give the client a default consent purpose (a configured one), or none."""
        client = await self.clients.get(client_id)
        if purpose is not None:
            purpose = purpose.strip().lower()
            try:
                check_purposes([purpose])
            except ValueError as exc:
                raise ViewError(str(exc)) from exc
        client.default_purpose = purpose
        await self.audit.record(audit.CLIENT_PURPOSE_SET, client_id, purpose=purpose)
        return client


def _ref(text: str) -> ViewRef:
    ref = parse_ref(text)
    if ref is None:
        raise ViewError("name a view: name or name@version")
    return ref
