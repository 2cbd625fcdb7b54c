"""A Personalize data-system connection to this service, in the shape of Personalize's
connections REST API (``/v2/connections``), and the same as a checklist for the UI.

What is Sitecore's and what is ours (docs/personalize.md says it with the pages):
- Sitecore documents ``name``, ``auth`` (``authType``, ``clientId``, ``accessTokenUrl``),
  ``request`` (``requestType``, ``connectionUrl``, ``requestBody`` with ``${key}``
  placeholders), ``inputMappings``, ``outputMappings``, ``customHeaders``, ``systemType``
  (``DATA_SYSTEM``), ``connectionTimeout`` and ``socketTimeout`` (ms, 1000 in its example).
- The names of the auth option (``authOption``: ``HEADER`` or ``BODY``), of the secret
  (``clientSecret``) and of the URL encoded form items (``formUrlEncodedItems``) are ours: the
  UI has those settings, the public REST reference does not name them.

The client secret is never written here: ``clientSecret`` holds ``SECRET_PLACEHOLDER``, which
the person pasting the definition replaces (``enrich personalize test`` takes the secret apart).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

SECRET_PLACEHOLDER = "<paste the client secret: enrich printed it once, at create or rotate>"
API_KEY_PLACEHOLDER = "<paste the API key: enrich printed it once, at api-key create or rotate>"
DEFAULT_NAME = "enrich_profile"
DEFAULT_IDENTIFIERS = ("guest_ref", "email")
SCOPE = "profiles:read"
# Personalize's defaults for both timeouts (its "Configure the request" pages).
TIMEOUT_MS = 1000
# OAuth with the client authenticated in the Basic header or the form body; or by
# Personalize's client certificate alone (the Body option with an empty secret, mutual TLS:
# RFC 8705's tls_client_auth); or no auth with the client's API key in a custom header (the
# weaker option: docs/security.md).
AUTH_OPTIONS = ("HEADER", "BODY", "CERTIFICATE", "API_KEY")
METHODS = ("POST", "GET")
# What the demo data's test guest answers to (`enrich demo`), as each input's example value.
EXAMPLES = {
    "email": "demo@example.com",
    "guest_ref": "demo-guest",
    "crm_id": "CRM-DEMO",
    "phone": "+14155550100",
}
# Named field sets for --fields (any other value is a comma-separated list of field paths).
FIELD_SETS: dict[str, tuple[str, ...]] = {
    "summary": (
        "traits.tier",
        "traits.first_name",
        "metrics.lifetime_value",
        "metrics.order_count",
        "segments",
    ),
    "everything": ("traits", "metrics", "segments", "recommendations"),
}
# Always mapped: the answer has them whether the guest is known or not.
FIXED_OUTPUTS = (("found", "found", "Boolean"), ("matched", "matched", "String"))
NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]{0,99}")
IDENTIFIER_RULE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class DefinitionError(ValueError):
    """A connection definition that cannot be made or used; the message says what to fix."""


def field_paths(fields: str) -> list[str]:
    """``--fields``: a named set or comma-separated field paths (checked by the caller)."""
    named = FIELD_SETS.get(fields.strip().lower())
    if named is not None:
        return list(named)
    return [path.strip() for path in fields.split(",") if path.strip()]


def connection(
    *,
    base_url: str,
    client_id: str,
    fields: Sequence[str],
    view: tuple[str, Mapping[str, str]] | None = None,
    identifiers: Sequence[str] = DEFAULT_IDENTIFIERS,
    auth_option: str = "HEADER",
    method: str = "POST",
    name: str = DEFAULT_NAME,
    mutual_tls: bool = False,
    api_key_header: str = "X-API-Key",
) -> dict[str, Any]:
    """The connection, ready for the connections REST API or ``enrich personalize test``.

    ``mutual_tls``: Personalize presents a client certificate to the token and request URLs
    (``useMutualTls``); the service binds the tokens to it (docs/personalize.md). ``view``:
    the request names this view (``name@version``) instead of ``fields`` (its fields), and the
    outputs read its flat keys (``rename``: field -> key)."""
    base = base_url.rstrip("/")
    _check(name, identifiers, auth_option, method, base)
    custom: list[dict[str, str]] = []
    if auth_option == "API_KEY":
        custom = [{"name": api_key_header, "value": API_KEY_PLACEHOLDER}]
    return {
        "name": name,
        "description": "Guest profile from enrich: "
        + (f"view {view[0]}" if view else (", ".join(fields) or "every field")),
        "systemType": "DATA_SYSTEM",
        "auth": _auth(base, client_id, auth_option),
        "useMutualTls": mutual_tls or auth_option == "CERTIFICATE",
        "request": _request(base, method, identifiers, fields, view[0] if view else None),
        "inputMappings": [
            {
                "label": identifier,
                "key": identifier,
                "type": "string",
                "exampleValue": EXAMPLES.get(identifier, ""),
                "mapping": "",
            }
            for identifier in identifiers
        ],
        "outputMappings": output_mappings(fields, view[1] if view else None),
        "customHeaders": custom,
        "connectionTimeout": TIMEOUT_MS,
        "socketTimeout": TIMEOUT_MS,
    }


def _auth(base: str, client_id: str, auth_option: str) -> dict[str, Any]:
    if auth_option == "API_KEY":
        return {"authType": "NONE"}
    return {
        "authType": "OAUTH",
        "accessTokenUrl": f"{base}/oauth/token",
        "clientId": client_id,
        # (a certificate client has no secret: the field stays empty)
        "clientSecret": "" if auth_option == "CERTIFICATE" else SECRET_PLACEHOLDER,
        "authOption": "BODY" if auth_option == "CERTIFICATE" else auth_option,
        "customHeaders": [],
        "formUrlEncodedItems": [
            {"name": "grant_type", "value": "client_credentials"},
            {"name": "scope", "value": SCOPE},
        ],
    }


def _check(name: str, identifiers: Sequence[str], auth_option: str, method: str, base: str) -> None:
    if not NAME_RULE.fullmatch(name):
        raise DefinitionError(
            "the name takes letters, digits, spaces and underscores (Sitecore warns that "
            "hyphens break references from programmable decisions)"
        )
    if not identifiers or any(not IDENTIFIER_RULE.fullmatch(i) for i in identifiers):
        raise DefinitionError("identifiers are type names such as email, guest_ref, crm_id")
    if auth_option not in AUTH_OPTIONS:
        raise DefinitionError(f"the auth option is one of {', '.join(AUTH_OPTIONS)}")
    if method not in METHODS:
        raise DefinitionError(f"the method is one of {', '.join(METHODS)}")
    if not base.startswith(("https://", "http://")):
        raise DefinitionError(f"the base URL must start with https:// (got {base[:60]!r})")


def _request(
    base: str, method: str, identifiers: Sequence[str], fields: Sequence[str], view: str | None
) -> dict[str, Any]:
    if method == "GET":
        query = [f"{i}=${{{i}}}" for i in identifiers]
        if view:
            query.append(f"view={view}")
        elif fields:
            query.append("fields=" + ",".join(quote(f, safe=".") for f in fields))
        return {"requestType": "GET", "connectionUrl": f"{base}/v1/enrich?" + "&".join(query)}
    body: dict[str, Any] = {"identifiers": {i: f"${{{i}}}" for i in identifiers}}
    if view:
        body["view"] = view
    elif fields:
        body["fields"] = list(fields)
    return {
        "requestType": "POST",
        "connectionUrl": f"{base}/v1/enrich",
        "requestBody": json.dumps(body),
    }


def output_mappings(
    fields: Sequence[str], rename: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """``found`` and ``matched``, then one output per field asked for (``traits.tier`` as
    ``traits_tier``; a field a view renames as its flat key). The types are our choice:
    Sitecore documents String outputs."""
    outputs = [{"label": a, "outputReference": b, "type": c} for a, b, c in FIXED_OUTPUTS]
    for path in fields:
        root = path.split(".", 1)[0].lower()
        if root in ("segments", "recommendations"):
            kind = "Array"
        elif "." not in path:
            kind = "Object"  # a whole root: traits or metrics
        elif root == "metrics":
            kind = "Number"
        else:
            kind = "String"
        key = (rename or {}).get(path)
        if key is not None:
            outputs.append({"label": key, "outputReference": key, "type": kind})
        else:
            label = path.replace(".", "_")
            outputs.append({"label": label, "outputReference": path, "type": kind})
    return outputs
