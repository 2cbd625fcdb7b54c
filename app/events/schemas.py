"""Events as a Triggered Experience destination sends them, and the acknowledgement."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.profiles.identity import is_absent
from app.profiles.schemas import MAX_MONEY, check_storable

PURCHASE = "purchase"


def _text(value: Any) -> Any:
    """Numbers are taken as strings; an unfilled ``${...}`` is as good as missing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return None if is_absent(value) else value.strip()
    return value


def _timestamp(value: Any) -> Any:
    return None if isinstance(value, str) and is_absent(value) else value


def amount_of(value: Any) -> Decimal:
    """A purchase amount: a number or a numeric string, finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("data.amount must be a number or a numeric string")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation as exc:
        raise ValueError(f"data.amount {str(value)[:40]!r} is not a number") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError("data.amount must be a finite number >= 0")
    if amount > Decimal(str(MAX_MONEY)):
        raise ValueError("data.amount is too large")
    return amount


class EventIn(BaseModel):
    """One event; ``event_id`` makes a retried delivery a duplicate."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "ord-2026-000123",
                    "type": "purchase",
                    "identifiers": {"guest_ref": "b1c3e0f4-...", "email": "jane@example.com"},
                    "occurred_at": "2026-11-28T14:05:00Z",
                    "data": {"amount": "49.90", "currency": "EUR", "order_id": "123"},
                }
            ]
        },
    )

    event_id: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=200)]
    type: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]
    identifiers: dict[str, Any] = Field(
        max_length=32, description="type -> value, at least one present"
    )
    occurred_at: Annotated[datetime | None, BeforeValidator(_timestamp)] = Field(
        default=None, description="defaults to the time of receipt; without a zone: UTC"
    )
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> EventIn:
        self.type = self.type.lower()
        check_storable(self.event_id, "event_id")
        check_storable(self.type, "type")
        check_storable(self.data, "data")
        if self.type == PURCHASE:
            if "amount" not in self.data or is_absent(self.data["amount"]):
                raise ValueError("a purchase needs data.amount")
            amount_of(self.data["amount"])
        return self

    @property
    def amount(self) -> Decimal | None:
        return amount_of(self.data["amount"]) if self.type == PURCHASE else None


class EventAck(BaseModel):
    """202 for a new event (after it is committed), 200 with ``duplicate: true`` for a repeat."""

    accepted: bool = True
    duplicate: bool
    event_id: str
    profile_id: str | None
