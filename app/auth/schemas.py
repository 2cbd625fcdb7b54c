"""Shapes of the OAuth endpoints' answers (RFC 6749 5.1, RFC 7662, RFC 8414)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

SCOPES: dict[str, str] = {
    "profiles:read": "Enrich lookups and profile reads",
    "profiles:write": "Profile writes and bulk loads",
    "events:write": "Events from Triggered Experiences",
    "admin": "Client administration and introspection of any token",
}


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int = Field(examples=[3600])
    scope: str = Field(examples=["profiles:read"])


class OAuthErrorResponse(BaseModel):
    error: str = Field(examples=["invalid_client"])
    error_description: str | None = None


class IntrospectionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    active: bool
    scope: str | None = None
    client_id: str | None = None
    token_type: str | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    sub: str | None = None
    aud: str | None = None
    iss: str | None = None
    jti: str | None = None


class ClientCreated(BaseModel):
    client_id: str
    client_secret: str
    scopes: list[str]


class ClientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    name: str
    scopes: list[str]
    disabled: bool
    created_at: datetime
    rotated_at: datetime | None
