"""The consent check of an enrich answer, and the no-consent answer.

A request serves a purpose when its view declares one, else when its client has a default
purpose (``enrich clients purpose``); with none, nothing is checked. The guest has not
consented when their latest decision for the purpose is ``denied``, or when they never decided
and the purpose is opt-in (``ENRICH_CONSENT_PURPOSES``). Then the answer is found but holds no
personal data: the usual keys (a view's shape, with its defaults, as for an unknown guest),
``found: true`` and ``matched``, ``profile_id`` and ``updated_at`` null (a profile id is a
pseudonymous identifier of the guest, which the refused purpose may not link to the visit),
and a ``consent`` member saying which purpose and why, just before ``stale``.

The decision is made on every render from the statuses the cached profile view carries (a
dictionary lookup), and an answer is cached under its purpose (part of the selection's key),
so an L1 hit serves the decision made when the entry was filled: a consent write invalidates
it like any profile write.
"""

from __future__ import annotations

from typing import Any

from app.enrich.fields import Selection

DENIED = "denied"
NOT_GRANTED = "not_granted"
# Only a no-consent answer ends so: any other ends with updated_at (a string or null), or
# with `truncated` (a cut answer: a no-consent one is cut only when a view's defaults pass the
# size cap, and its access line then lacks the reason).
REFUSED_TAILS = (b'"},"stale":false}', b'"},"stale":true}')
_MARKER = b'"consent":{"purpose":"'
_STATUS = b'","status":"'


def refusal(view: dict[str, Any], selection: Selection) -> str | None:
    """Why the guest of ``view`` has not consented to ``selection``'s purpose, or None."""
    purpose = selection.purpose
    if purpose is None:
        return None
    status = view.get("consent", {}).get(purpose)
    if status == DENIED:
        return DENIED
    if status is None and selection.opt_in:
        return NOT_GRANTED
    return None


def marker(selection: Selection, why: str) -> dict[str, str]:
    """The ``consent`` member of a no-consent answer."""
    return {"purpose": selection.purpose or "", "status": why}


def no_consent(document: dict[str, Any], matched: str, selection: Selection, why: str) -> None:
    """Turn an unknown guest's answer (``document``) into the no-consent answer, in place."""
    document["found"] = True
    document["matched"] = matched
    del document["stale"]
    document["consent"] = marker(selection, why)
    document["stale"] = False  # always last (see app.enrich.document.mark_stale)


def refused_in(body: bytes) -> str | None:
    """``denied:marketing`` when ``body`` is a no-consent answer, else None: for the access
    line. Cheap: any other answer fails one comparison of its last bytes."""
    if not body.endswith(REFUSED_TAILS):
        return None
    start = body.rfind(_MARKER)
    if start < 0:
        return None
    start += len(_MARKER)
    middle = body.find(_STATUS, start)
    end = body.find(b'"', middle + len(_STATUS))
    if middle < 0 or end < 0:
        return None
    purpose = body[start:middle].decode()
    return f"{body[middle + len(_STATUS) : end].decode()}:{purpose}"
