"""Consent purposes: their names and the rule each follows (``ENRICH_CONSENT_PURPOSES``).

``personalization:opt-out,marketing:opt-in,analytics:opt-out``: a purpose is a name in the
grammar of an identifier type, then its rule. Opt-in: a guest who never granted it has not
consented. Opt-out: a guest who never denied it has. Read once when a process starts (the
settings check the text, so a typo stops the start, not a request).
"""

from __future__ import annotations

import re

PURPOSE_NAME = "[a-z][a-z0-9_]{0,31}"
PURPOSE_PATTERN = f"^{PURPOSE_NAME}$"
_ITEM = re.compile(f"^({PURPOSE_NAME}):(opt-in|opt-out)$")
MAX_PURPOSES = 32
DEFAULT_PURPOSES = "personalization:opt-out,marketing:opt-in,analytics:opt-out"

# purpose -> whether it is opt-in (True: consent only once granted)
Rules = dict[str, bool]


def parse_purposes(text: str) -> Rules:
    """The purposes and their rules, or a ValueError that names the item it cannot read."""
    rules: Rules = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        found = _ITEM.match(item.lower())
        if found is None:
            raise ValueError(
                f"{item[:60]!r} is not purpose:opt-in or purpose:opt-out "
                f"(a purpose is {PURPOSE_NAME})"
            )
        if found[1] in rules:
            raise ValueError(f"purpose {found[1]!r} is named twice")
        rules[found[1]] = found[2] == "opt-in"
    if len(rules) > MAX_PURPOSES:
        raise ValueError(f"at most {MAX_PURPOSES} purposes")
    return rules
