"""Identifier rules: type names, normalization, and what counts as absent.

Personalize fills request templates with ``${...}`` variables; an unfilled one arrives empty or
as the literal placeholder, and both count as absent. Emails are trimmed and lower-cased;
phones become E.164 (libphonenumber, default region a setting); every email also answers to
``email_sha256``, the hex SHA-256 of the normalized email.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import phonenumbers

from app.core.errors import AppError
from app.core.patterns import TYPE_NAME_PATTERN, compiled

# Checked before lower-casing, on the name as sent: ASCII only, no surrounding blanks.
TYPE_PATTERN = compiled(TYPE_NAME_PATTERN)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
PLACEHOLDER = re.compile(r"^\$\{[^}]*\}?$")
MAX_VALUE_LENGTH = 320
BUILTIN_TYPES = ("email", "phone", "crm_id", "guest_ref", "email_sha256")

Key = tuple[str, str]  # (type, normalized value)


class IdentifierError(AppError):
    status_code = 400
    code = "invalid_identifier"


def is_absent(value: Any) -> bool:
    """Empty values and unfilled template placeholders mean "not given"."""
    if value is None:
        return True
    if isinstance(value, str):
        stripped = value.strip()
        return not stripped or bool(PLACEHOLDER.match(stripped))
    return False


def normalize_type(raw: str) -> str:
    """Type names are case-insensitive and must match ``[a-z][a-z0-9_]{0,31}``."""
    if not isinstance(raw, str) or not TYPE_PATTERN.match(raw):
        raise IdentifierError(
            f"invalid identifier type {str(raw)[:40]!r}: use [a-z][a-z0-9_]{{0,31}}"
        )
    return raw.lower()


def require_text(id_type: str, value: str) -> None:
    """Refuse a string that is not text: a lone surrogate (JSON's ``"\\ud800"``, or invalid
    UTF-8 in a query) cannot be encoded for Redis, PostgreSQL or a log line.

    Unlike a value that cannot be of its type, this is a 400 on a read too: the request is
    broken, and letting it reach the cache would count as Redis failing.
    """
    if value.isascii():
        return
    try:
        value.encode()
    except UnicodeEncodeError:
        raise IdentifierError(f"identifier {id_type} is not valid UTF-8 text") from None


def _as_text(id_type: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise IdentifierError(f"identifier {id_type} must be a string or a number")
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        require_text(id_type, value)
    return str(value).strip()


def email_sha256(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def normalize_value(id_type: str, value: Any, region: str) -> str:
    """Normalize one present value; raise IdentifierError when it cannot be one of its type."""
    text = _as_text(id_type, value)
    if "\x00" in text:
        raise IdentifierError(f"identifier {id_type} contains a NUL character")
    if len(text) > MAX_VALUE_LENGTH:
        raise IdentifierError(f"identifier {id_type} is longer than {MAX_VALUE_LENGTH} characters")
    if id_type == "email":
        text = text.lower()
        if not EMAIL.match(text):
            raise IdentifierError(f"identifier email {text[:60]!r} is not an email address")
        return text
    if id_type == "email_sha256":
        text = text.lower()
        if not HEX64.match(text):
            raise IdentifierError("identifier email_sha256 must be 64 hexadecimal characters")
        return text
    if id_type == "phone":
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException as exc:
            raise IdentifierError(f"identifier phone is not a phone number: {exc}") from exc
        if not phonenumbers.is_possible_number(number):
            raise IdentifierError("identifier phone is not a possible phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return text


def lookup_keys(identifiers: Mapping[str, Any], region: str) -> list[Key]:
    """Keys to try, in the caller's order, for a read (enrich, GET).

    Absent values are dropped. A value that cannot be of its type can match nothing, so it is
    dropped too rather than failing the request; an invalid *type name*, or a value that is not
    text at all, is still a 400.
    """
    keys: list[Key] = []
    seen: set[Key] = set()
    for raw_type, value in identifiers.items():
        id_type = normalize_type(raw_type)
        if isinstance(value, str):
            require_text(id_type, value)
        if is_absent(value):
            continue
        try:
            key = (id_type, normalize_value(id_type, value, region))
        except IdentifierError:
            continue
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def write_keys(identifiers: Mapping[str, Any], region: str) -> list[Key]:
    """Keys a write stores, strictly validated, with ``email_sha256`` derived from ``email``."""
    keys: list[Key] = []
    for raw_type, value in identifiers.items():
        id_type = normalize_type(raw_type)
        if is_absent(value):
            continue
        keys.append((id_type, normalize_value(id_type, value, region)))
    return with_derived(keys)


def with_derived(keys: Iterable[Key]) -> list[Key]:
    """Add the ``email_sha256`` key of every email key (once, keeping order)."""
    result: list[Key] = []
    seen: set[Key] = set()
    for key in keys:
        extra = [key]
        if key[0] == "email":
            extra.append(("email_sha256", email_sha256(key[1])))
        for item in extra:
            if item not in seen:
                seen.add(item)
                result.append(item)
    return result


def path_key(id_type: str, id_value: str, region: str) -> Key:
    """The key named by a resource path ``/v1/profiles/{type}/{value}``."""
    normalized = normalize_type(id_type)
    if is_absent(id_value):
        raise IdentifierError("the identifier value in the path is empty")
    return normalized, normalize_value(normalized, id_value, region)
