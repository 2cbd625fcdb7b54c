"""The relay's email pattern means the same to every reader of the schema.

OpenAPI patterns are ECMA-262, which schema-driven generators (Schemathesis, Postman) follow;
pydantic checks them with Rust's regex; Python's `re` is a third reading. Their `\\s` differ, so a
pattern built on it accepts in one what another refuses (a CI run of Schemathesis sent an email
with U+0085 that pydantic refused). The pattern spells its classes out; this checks each
character any of the three calls white space, and a few that all call ordinary.
"""

from __future__ import annotations

import re
import sys

import pytest
from pydantic import ValidationError

from app.experiences.schemas import EMAIL_PATTERN, CallFlows

# ECMA-262's WhiteSpace and LineTerminator (what `\s` matches there).
ECMA_SPACE = set("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {
    chr(c) for c in range(0x2000, 0x200B)
}
PYTHON_SPACE = {chr(c) for c in range(sys.maxunicode + 1) if re.match(r"\s", chr(c))}
CONTROL = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}

MEMBERS = {
    "clientKey": "k",
    "channel": "WEB",
    "language": "en",
    "currencyCode": "EUR",
    "pointOfSale": "site",
    "friendlyId": "banner",
}


def accepted_by_pydantic(email: str) -> bool:
    try:
        CallFlows(**MEMBERS, email=email)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("where", ["jane{}@example.com", "jane@exam{}ple.com"])
def test_every_space_or_control_character_is_refused_by_every_engine(where: str) -> None:
    pattern = re.compile(EMAIL_PATTERN)
    for char in sorted(ECMA_SPACE | PYTHON_SPACE | CONTROL):
        email = where.format(char)
        assert not pattern.match(email), f"U+{ord(char):04X}"
        assert not accepted_by_pydantic(email), f"U+{ord(char):04X}"


@pytest.mark.parametrize("email", ["jane@example.com", "jöns.ångström@exämple.se", "a+b@c", "ζ@ζ"])
def test_ordinary_addresses_are_accepted(email: str) -> None:
    assert re.compile(EMAIL_PATTERN).match(email)
    assert accepted_by_pydantic(email)


@pytest.mark.parametrize("email", ["@example.com", "jane@", "jane", "ja@ne@example.com"])
def test_not_one_at_between_two_parts_is_refused(email: str) -> None:
    assert not accepted_by_pydantic(email)
