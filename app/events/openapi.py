"""What the OpenAPI document says about the events route: its text, examples and answers."""

from __future__ import annotations

from typing import Any

from app.core.openapi import errors
from app.events.schemas import EventAck, EventIn

_ACK = {
    "accepted": True,
    "duplicate": False,
    "event_id": "ord-2026-000123",
    "profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": EventAck,
        "description": "A repeat of an event already processed: nothing changed",
        "content": {"application/json": {"example": {**_ACK, "duplicate": True}}},
    },
    202: {
        "model": EventAck,
        "description": "Accepted and committed",
        "content": {"application/json": {"example": _ACK}},
    },
    **errors(
        400,
        401,
        403,
        409,
        413,
        422,
        s400="An invalid identifier (type or value), no identifier with a value, or malformed JSON",
        s409="The identifiers belong to two different profiles, or this client already used "
        "the `event_id` for another event",
        s422="A missing or invalid member (a purchase needs `data.amount`; a consent event a "
        "configured `data.purpose` and `data.status`), an `occurred_at` "
        "too far in the future, or a purchase that would take `order_count` or "
        "`lifetime_value` past the largest value it holds",
    ),
}
EXAMPLES: dict[str, dict[str, Any]] = {
    "purchase": {
        "summary": "A purchase (moves order_count, lifetime_value, last_order_at)",
        "value": EventIn.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
    },
    "consent": {
        "summary": "A consent decision (the guest's consent for one purpose, at occurred_at)",
        "value": {
            **EventIn.model_config["json_schema_extra"]["examples"][1],  # type: ignore[index,dict-item]
            "identifiers": {"guest_ref": "demo-optout"},
        },
    },
    "page_view": {
        "summary": "Any other event (moves last_event_at)",
        "value": {
            "event_id": "view-2026-000456",
            "type": "page_view",
            "identifiers": {"guest_ref": "demo-guest"},
            "data": {"page": "/running/shoes"},
        },
    },
}

RECORD: dict[str, Any] = {
    "responses": _RESPONSES,
    "summary": "Record an event",
    "description": """Record an event once, as a Triggered Experience destination sends it: 202
after it is committed; a repeat of the same event (same `event_id`, same body) answers 200
with `duplicate: true` and changes nothing (also after the profile was erased), so retries
never double-count. Event ids are each client's own: another client's event with the same
id is a different event; the same client's `event_id` with another body is a 409 that tells
nothing about the first.

A `purchase` (with `data.amount`, a number or a plain decimal string, and `data.currency`)
adds to `order_count` and `lifetime_value` and moves `last_order_at` to its `occurred_at`;
every event moves `last_event_at`. A purchase that would take `lifetime_value` past 1e14 (or
`order_count` past 2147483647) is refused with 422 and not recorded. An `occurred_at` more
than `ENRICH_EVENT_MAX_CLOCK_SKEW_SECONDS` (300) ahead of the server's clock is a 422. An
event for an unknown guest creates the profile; its identifiers join the profile the first
known one belongs to.

Scope: `events:write`.""",
}
