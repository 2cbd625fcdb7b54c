"""The enrich answer document: the matched profile trimmed to the fields, capped in size.

The answer is built once as serialized bytes (what a cache stores and serves as they are),
with the same top-level keys whether a profile matched or not.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from app.core.models import Profile
from app.enrich.consent import no_consent, refusal
from app.enrich.fields import Selection
from app.enrich.schemas import UNKNOWN_ANSWER
from app.enrich.views.definition import ViewSelection
from app.enrich.views.shape import view_document
from app.identity.identifiers import Key
from app.profiles.consent import statuses
from app.profiles.documents import metrics_view
from app.profiles.schemas import fit_ints, iso

# A profile as the answer needs it: plain JSON-ready values, the unit the L2 cache stores.
AnswerView = dict[str, Any]
# The key that matched, and the view of its profile.
Match = tuple[Key, AnswerView]


def answer_view(profile: Profile) -> AnswerView:
    """What an answer is made from, of a profile (or of a row with the same attributes)."""
    return {
        "profile_id": str(profile.id),
        "traits": fit_ints(profile.traits or {}),
        "segments": profile.segments or [],
        "metrics": fit_ints(metrics_view(profile)),
        "recommendations": fit_ints(profile.recommendations or []),
        "updated_at": iso(profile.updated_at),
        # purpose -> status: all a consent check needs (app/enrich/consent.py)
        "consent": statuses(profile.consent),
    }


def _pick(source: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """The parts of ``source`` the dot paths name, nested as they were."""
    picked: dict[str, Any] = {}
    made = {id(picked)}  # containers built here; anything else is the profile's own value
    # Shorter paths first: once `traits.address` is in, `traits.address.city` is covered.
    for path in sorted(set(paths), key=len):
        value: Any = source
        for part in path:
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            target = picked
            for part in path[:-1]:
                child = target.get(part)
                if child is None:
                    child = target[part] = {}
                    made.add(id(child))
                elif id(child) not in made:
                    break
                target = child
            else:
                target[path[-1]] = value
    return picked


def _select(root: str, value: Any, selection: Selection) -> Any:
    if selection.paths is None or root in selection.whole:
        return value
    if root in ("segments", "recommendations"):
        return []
    return _pick(value, selection.paths[root])


def answer_document(match: Match | None, selection: Selection) -> dict[str, Any]:
    """The answer as a dict, the same top-level keys whether a profile matched or not.

    ``stale`` is always the last key, so a cached answer can be marked stale by swapping the
    final bytes instead of serializing again (see ``mark_stale``).
    """
    why = None if match is None or selection.purpose is None else refusal(match[1], selection)
    if why is not None:  # found, but no personal data (app/enrich/consent.py)
        assert match is not None
        document = answer_document(None, selection)
        no_consent(document, match[0][0], selection, why)
        return document
    if isinstance(selection, ViewSelection):  # a view's own shape (app.enrich.views.shape)
        found = None if match is None else (match[0][0], match[1])
        return view_document(found, selection, _select)
    if match is None:
        return copy.deepcopy(UNKNOWN_ANSWER)  # fit() edits the dict it is given
    key, view = match
    return {
        "found": True,
        "matched": key[0],
        "profile_id": view["profile_id"],
        "traits": _select("traits", view["traits"], selection),
        "segments": _select("segments", view["segments"], selection),
        "metrics": _select("metrics", view["metrics"], selection),
        "recommendations": _select("recommendations", view["recommendations"], selection),
        "updated_at": view["updated_at"],
        "stale": False,
    }


FRESH_SUFFIX = b'"stale":false}'
STALE_SUFFIX = b'"stale":true}'


def mark_stale(body: bytes) -> bytes:
    """The same answer with ``"stale": true`` (the key is always last)."""
    if body.endswith(FRESH_SUFFIX):
        return body[: -len(FRESH_SUFFIX)] + STALE_SUFFIX
    return body


def _chars(body: bytes) -> int:
    return len(body) if body.isascii() else len(body.decode())


# Cut in this order until the answer fits: lists from the end, then keys in sorted order.
CUT_ORDER = ("recommendations", "segments", "traits", "metrics")


def _shrunk(value: list[Any] | dict[str, Any], keep: int) -> list[Any] | dict[str, Any]:
    if isinstance(value, list):
        return value[:keep]
    kept = set(sorted(value)[:keep])
    return {name: item for name, item in value.items() if name in kept}


def fit(answer: dict[str, Any], max_chars: int, flat: tuple[str, ...] = ()) -> bytes:
    """Serialize; when over ``max_chars`` characters, cut deterministically and mark it.

    A view's answer may lack some roots and hold ``flat`` keys: those are emptied (null),
    last in sorted order first, when cutting its roots was not enough."""
    body = orjson.dumps(answer)
    if _chars(body) <= max_chars:
        return body
    del answer["stale"]
    answer["truncated"] = True
    answer["stale"] = False  # keep it last
    for name in CUT_ORDER:
        if name not in answer:
            continue
        original = answer[name]
        answer[name] = _shrunk(original, 0)
        body = orjson.dumps(answer)
        if _chars(body) > max_chars:
            continue  # even empty it does not fit: cut the next one too
        # Binary search for the longest prefix that fits (size grows with the prefix).
        low, high, best = 1, len(original), body
        while low <= high:
            middle = (low + high) // 2
            answer[name] = _shrunk(original, middle)
            candidate = orjson.dumps(answer)
            if _chars(candidate) <= max_chars:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        return best
    for name in sorted(flat, reverse=True):
        answer[name] = None
        body = orjson.dumps(answer)
        if _chars(body) <= max_chars:
            return body
    return body


def render(match: Match | None, selection: Selection, max_chars: int) -> bytes:
    """The answer's bytes: the document for ``selection``, fitted to ``max_chars``."""
    flat = tuple(key for _, key in selection.flat) if isinstance(selection, ViewSelection) else ()
    return fit(answer_document(match, selection), max_chars, flat)
