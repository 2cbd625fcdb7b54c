"""All ORM tables, imported here so Alembic sees every one of them."""

from app.models.audit import AuditEvent
from app.models.auth import Client, RevokedToken, SigningKey
from app.models.base import Base
from app.models.profiles import Event, Identifier, ProcessedEvent, Profile

__all__ = [
    "AuditEvent",
    "Base",
    "Client",
    "Event",
    "Identifier",
    "ProcessedEvent",
    "Profile",
    "RevokedToken",
    "SigningKey",
]
