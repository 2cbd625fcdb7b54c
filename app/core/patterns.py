"""Regular expressions that the OpenAPI document publishes and the service enforces.

Each pattern here is the rule itself, not a description of it: the service validates with the
same expression it documents, so a client (or a schema-driven fuzzer) that follows the schema
is never refused, and one that breaks it is. They are written for both dialects that read them,
Python's ``re`` and ECMA-262 (JSON Schema): ASCII classes, ``\\uXXXX`` escapes, no ``(?i)``, and
the whitespace class spelled out as the characters ``str.strip()`` removes.
"""

from __future__ import annotations

import re

# What str.strip() removes (str.isspace), which neither \s dialect matches exactly.
WS = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
W = f"[{WS}]"

TYPE_NAME = "[A-Za-z][A-Za-z0-9_]{0,31}"
TYPE_NAME_PATTERN = f"^{TYPE_NAME}$"

# An unfilled Personalize template variable, as `is_absent` sees it after stripping.
PLACEHOLDER = "\\$\\{[^}]*\\}?"
ABSENT_TEXT_PATTERN = f"^{W}*(?:{PLACEHOLDER}{W}*)?$"


def present_text(max_length: int, *, excluding: str = "") -> str:
    """A string that is not absent once stripped, 1 to ``max_length`` characters, no NUL.

    ``excluding`` adds characters the stripped value may not hold.
    """
    inner = f"[^\\x00{excluding}]"
    edge = f"[^\\x00{excluding}{WS}]"
    not_placeholder = f"(?!{PLACEHOLDER}{W}*$)"
    body = f"{edge}(?:{inner}{{0,{max_length - 2}}}{edge})?" if max_length > 1 else edge
    return f"{W}*{not_placeholder}{body}{W}*"


def present_text_pattern(max_length: int) -> str:
    return f"^{present_text(max_length)}$"


def absent_or_present_pattern(max_length: int) -> str:
    """Absent (empty, blank or a placeholder, of any length), or present text."""
    return f"^(?:{W}*(?:{PLACEHOLDER}{W}*)?|{present_text(max_length)})$"


def any_case(word: str) -> str:
    """``word`` in any letter case, as an ASCII class per letter (no ``(?i)`` in ECMA-262)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


def compiled(pattern: str) -> re.Pattern[str]:
    """The Python form of a documented pattern (`$` is the end of the string, as in JSON)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern, re.DOTALL)
