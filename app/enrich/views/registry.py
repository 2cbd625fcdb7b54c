"""Each process's views: what ``view=`` and a client's default view resolve to.

The views live in the database; every process keeps the live versions compiled, bounded in
bytes (``ENRICH_VIEWS_MAX_BYTES``: each name's latest version first, then older versions,
newest first), and refreshes them on the auth poll (``AuthStateSync``, every 0.25 s): when
the table's fingerprint changes (a new version, a retirement) it loads them again, so a
retired view is refused by every worker within a second. The clients' default views are read
on the same poll, and so are their default consent purposes (``enrich clients purpose``).
Resolving a reference is a dictionary lookup; a request without a view, from a client without
a default view, costs one truth test of an empty dictionary (two, with client purposes: one
more lookup, and a second for the selection with that purpose, made once and remembered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.enrich.fields import Selection
from app.enrich.views.definition import ViewRef, ViewSelection, compile_view, parse_ref, ref_text
from app.enrich.views.repository import Row, ViewRepository
from app.platform.sizes import DICT_SLOT_BYTES, footprint
from app.profiles.consent import rules as consent_rules

log = structlog.get_logger(__name__)

# Selections with a client's purpose remembered (a view, or a `fields` set, with a purpose);
# past this many the table starts over (a selection is made again in a microsecond).
PURPOSED_MAX = 1024


class UnknownViewError(AppError):
    # 404: the view named is not there (as a profile that is not: a name can be well formed
    # and still unknown, which no schema can say, so it is not a validation error)
    status_code = 404
    code = "unknown_view"


class RetiredViewError(AppError):
    status_code = 410
    code = "view_retired"


class ViewNotLoadedError(AppError):
    status_code = 503
    code = "view_unavailable"


class ViewRegistry:
    """The live views of this process and each client's default view."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.versions: dict[ViewRef, ViewSelection] = {}  # (name, version) -> compiled
        self.latest: dict[str, ViewSelection] = {}  # name -> its latest live version
        self.highest: dict[str, int] = {}  # name -> its highest version, live or retired
        self.unloaded: set[ViewRef] = set()  # live, but past max_bytes
        self.defaults: dict[str, ViewRef] = {}  # client_id -> its default view
        self.purposes: dict[str, str] = {}  # client_id -> its default consent purpose
        self._purposed: dict[tuple[object, str], Selection] = {}
        self.bytes = 0
        self._fingerprint: tuple[int, int, int] | None = None

    # -- the request path ----------------------------------------------------------------

    def resolve(self, ref: ViewRef, client_default: bool = False) -> ViewSelection:
        """The compiled view ``ref`` names, or the 4xx (503) that says why not."""
        name, version = ref
        found = self.latest.get(name) if version is None else self.versions.get(ref)
        if found is not None:
            return found
        whose = " (this client's default view)" if client_default else ""
        shown = ref_text(ref)
        highest = self.highest.get(name)
        if highest is None or (version is not None and version > highest):
            raise UnknownViewError(f"view {shown!r}{whose} does not exist")
        if ref in self.unloaded:
            raise ViewNotLoadedError(
                f"view {shown!r}{whose} is not loaded: there are more live views than "
                "ENRICH_VIEWS_MAX_BYTES holds",
                headers={"Retry-After": "1"},
            )
        latest = self.latest.get(name)
        instead = f"; the latest is {latest.ref!r}" if latest is not None else ""
        raise RetiredViewError(f"view {shown!r}{whose} is retired{instead}")

    def selection(self, ref: ViewRef | None, selection: Selection, client_id: str) -> Selection:
        """What a request's answer carries: the view it names, else the client's default view
        when it names no fields either, else its ``fields``; with the view's consent purpose,
        else the client's default purpose, else none."""
        chosen: Selection
        if ref is not None:
            chosen = self.resolve(ref)
        elif self.defaults and selection.key is None:
            chosen = self.default_for(client_id) or selection
        else:
            chosen = selection
        if self.purposes and chosen.purpose is None:
            purpose = self.purposes.get(client_id)
            if purpose is not None:
                return self.purposed(chosen, purpose)
        return chosen

    def purposed(self, base: Selection, purpose: str) -> Selection:
        """``base`` serving ``purpose`` (a purpose no longer configured counts as opt-in), under
        a cache key of its own."""
        memo = (base.key, purpose)
        found = self._purposed.get(memo)
        if found is None:
            if len(self._purposed) >= PURPOSED_MAX:
                self._purposed.clear()
            found = self._purposed[memo] = replace(
                base,
                key=(*(base.key or ("*",)), f"purpose:{purpose}"),
                purpose=purpose,
                opt_in=consent_rules().get(purpose, True),
            )
        return found

    def default_for(self, client_id: str) -> ViewSelection | None:
        """The client's default view, if it has one (or the error it now meets)."""
        ref = self.defaults.get(client_id)
        return None if ref is None else self.resolve(ref, client_default=True)

    # -- the poll ------------------------------------------------------------------------

    async def refresh(self, session: AsyncSession) -> None:
        """One poll (``AuthStateSync``): the views again when the table changed; the clients'
        default views."""
        repo = ViewRepository(session)
        fingerprint = await repo.fingerprint()
        if fingerprint != self._fingerprint:
            self.load(await repo.rows())
            self._fingerprint = fingerprint
        defaults: dict[str, ViewRef] = {}
        purposes: dict[str, str] = {}
        for client_id, text, purpose in await repo.client_defaults():
            ref = _ref_or_none(text) if text else None
            if ref is not None:
                defaults[client_id] = ref
            if purpose:
                purposes[client_id] = purpose
        if defaults != self.defaults:
            self.defaults = defaults
        if purposes != self.purposes:
            self.purposes = purposes

    def load(self, rows: Iterable[Row]) -> None:
        """Replace what this process knows with ``rows`` (each name's latest live version
        first, then the others newest first, while they fit in ``max_bytes``)."""
        rows = list(rows)
        highest: dict[str, int] = {}
        for name, version, _, _ in rows:
            highest[name] = max(version, highest.get(name, 0))
        size = footprint(highest)
        latest_live: dict[str, int] = {}
        for name, version, definition, retired in rows:
            if not retired and definition is not None:
                latest_live[name] = max(version, latest_live.get(name, 0))
        ordered = sorted(
            (row for row in rows if not row[3] and row[2] is not None),
            key=lambda row: (latest_live[row[0]] != row[1], -row[1], row[0]),
        )
        versions: dict[ViewRef, ViewSelection] = {}
        latest: dict[str, ViewSelection] = {}
        unloaded: set[ViewRef] = set()
        for name, version, definition, _ in ordered:
            assert definition is not None
            compiled = compile_view(name, version, definition)
            cost = footprint(compiled) + 2 * DICT_SLOT_BYTES
            if size + cost > self.max_bytes:
                unloaded.add((name, version))
                if latest_live[name] == version:
                    unloaded.add((name, None))
                continue
            size += cost
            versions[(name, version)] = compiled
            if latest_live[name] == version:
                latest[name] = compiled
        if unloaded:
            log.warning("views.over_budget", unloaded=len(unloaded), max_bytes=self.max_bytes)
        self.versions, self.latest, self.highest = versions, latest, highest
        self.unloaded, self.bytes = unloaded, size


def _ref_or_none(text: str) -> ViewRef | None:
    """A stored default view as a reference (one that no longer parses counts as none)."""
    try:
        return parse_ref(text)
    except AppError:
        return None
