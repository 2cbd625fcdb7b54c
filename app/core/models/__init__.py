"""All ORM tables, imported here so Alembic sees every one of them."""

from app.core.models.audit import AuditEvent
from app.core.models.auth import ApiKey, Client, RevokedToken, SigningKey
from app.core.models.base import Base
from app.core.models.profiles import (
    ConsentRecord,
    Event,
    Identifier,
    ProcessedEvent,
    Profile,
)
from app.core.models.views import ViewVersion

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Client",
    "ConsentRecord",
    "Event",
    "Identifier",
    "ProcessedEvent",
    "Profile",
    "RevokedToken",
    "SigningKey",
    "ViewVersion",
]
