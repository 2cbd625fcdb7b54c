"""The relay's rules: look the guest up, put their fields in ``params``, ask Personalize.

The guest lookup is enrich's own (``EnrichCache.answer``: L1, L2, then the database under
enrich's deadline), so the relay sees what ``POST /v1/enrich`` would answer for the same
identifiers and fields, and shares its cache. That answer goes into ``params.enrich``, whole
(``found``, ``matched``, ``traits``, ``segments``, ...: the same keys for a known or an unknown
guest), fitted with enrich's own cut into what the caller's params leave of the size limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from app.core.errors import AppError
from app.core.settings import Settings
from app.enrich.cache.store import EnrichCache, Level
from app.enrich.document import fit
from app.enrich.fields import Selection, parse_fields
from app.enrich.request import keys_and_selection
from app.experiences.client import Answer, Failure, PersonalizeClient, RelayFailure
from app.experiences.schemas import GUEST_PARAM, ExperienceCall

log = structlog.get_logger(__name__)

# What the guest's part needs at least, cut to its fixed keys and `truncated` (about 150
# characters) with room to spare: the caller's own params get the rest of the limit.
GUEST_RESERVE_CHARS = 400
FALLBACK_HEADER = "X-Experience-Fallback"


class ParamsTooLargeError(AppError):
    status_code = 422
    code = "params_too_large"


@dataclass(frozen=True)
class Relayed:
    """What to answer: Personalize's answer, or the fallback and its reason."""

    answer: Answer | None
    fallback: Failure | None
    level: Level


@dataclass(frozen=True)
class Relay:
    """Everything the relay needs, built once per process (``app/runtime.py``)."""

    cache: EnrichCache
    client: PersonalizeClient
    default_fields: Selection
    params_max_chars: int
    phone_region: str

    async def call(self, call: ExperienceCall) -> Relayed:
        """Personalize's answer for the guest, or the fallback on timeout or failure."""
        own = call.personalize.params or {}
        own_chars = _chars(orjson.dumps(own))
        room = self.params_max_chars - GUEST_RESERVE_CHARS
        if own_chars > room:
            raise ParamsTooLargeError(
                f"params takes {own_chars} characters; at most {room} leave room for the "
                f"guest's fields (ENRICH_EXPERIENCE_PARAMS_MAX_CHARS={self.params_max_chars})"
            )
        guest, level = await self._guest(call)
        # `{**own, "enrich": ...}` costs what `own` costs plus the key and separators.
        guest_room = self.params_max_chars - own_chars - len(GUEST_PARAM) - 4
        params = {**own, GUEST_PARAM: orjson.Fragment(fit(guest, guest_room))}
        body = call.personalize.model_dump(exclude_none=True, exclude={"params"})
        body["params"] = params
        try:
            answer = await self.client.call_flows(orjson.dumps(body), call.personalize.clientKey)
        except RelayFailure as failure:
            return Relayed(None, failure.reason, level)
        return Relayed(answer, None, level)

    async def _guest(self, call: ExperienceCall) -> tuple[dict[str, Any], Level]:
        """The enrich answer for the caller's identifiers and fields, as a dict."""
        keys, selection = keys_and_selection(call.identifiers, call.fields, self.phone_region)
        if call.fields is None:
            selection = self.default_fields
        body, level = await self.cache.answer(keys, selection)
        guest: dict[str, Any] = orjson.loads(body)
        return guest, level


def default_selection(fields: str) -> Selection:
    """``ENRICH_EXPERIENCE_FIELDS`` read once at start (a typo stops the start, not a call)."""
    return parse_fields(fields)


def _chars(body: bytes) -> int:
    return len(body) if body.isascii() else len(body.decode())


@asynccontextmanager
async def open_relay(settings: Settings, enrich_cache: EnrichCache) -> AsyncIterator[Relay]:
    """The Interactive Experience relay: the guest lookup, and one HTTP client for Personalize
    per process (its connection pool), closed at exit."""
    selection = default_selection(settings.experience_fields)  # a typo stops the start
    client = PersonalizeClient(settings.personalize_api_url, settings.personalize_timeout_ms)
    if not client.configured:
        log.info("experiences.relay_off", reason="ENRICH_PERSONALIZE_API_URL is not set")
    try:
        yield Relay(
            enrich_cache,
            client,
            selection,
            settings.experience_params_max_chars,
            settings.default_phone_region,
        )
    finally:
        await client.aclose()
