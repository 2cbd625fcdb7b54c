"""Schemathesis hooks for enrich (loaded through SCHEMATHESIS_HOOKS by test_schemathesis.py).

- NDJSON bodies: serialized as written (a string); any other value as an empty body.
- ``positive_data_acceptance`` with one exception, explained in docs/qa.md: an identifier
  value that is not valid for its type (``email`` "0", a ``phone`` that is no phone number)
  or that contradicts the path (PUT ``/v1/profiles/email/a@example.com`` with another email
  in the body) is a 400 ``invalid_identifier``. Whether a value is valid depends on the
  identifier type, another field, which JSON Schema cannot express; everything else that check
  covers (type names included) still has to pass, and so do all the other default checks.
  Likewise enrich's ``view`` with ``fields`` (each valid alone, not together: a 422
  ``view_and_fields``), which query parameters cannot state in OpenAPI; and an export's
  ``events_after`` cursor that this service did not give (a 400 ``invalid_cursor``).
- ``use_after_free`` knowing that a profile has many addresses: after ``DELETE
  /v1/profiles/e/x`` a write through another identifier (``PUT /v1/profiles/crm/7`` with
  ``{"identifiers": {"e": "x"}}``) or an event may create a new profile that ``e`` ``x``
  finds. The built-in check only sees paths, so it calls that new profile the erased one. This
  one fails when the answer is the erased profile itself (the same ``profile_id`` as the write
  before the DELETE answered).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    # The document says an NDJSON body is text with a record in it. A value of another type
    # only comes from a negative case ("incorrect type") and has no NDJSON form of its own: it
    # is sent as a body without records, which the service must refuse.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""


def _typed_identifier_value_refused(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    detail = str(body.get("detail", ""))
    return body.get("error") == "invalid_identifier" and not detail.startswith(
        "invalid identifier type"
    )


def _future_event_refused(response: Any) -> bool:
    """An event's ``occurred_at`` too far ahead of the clock is refused by design (a date-time
    in the schema cannot say "not in the future"; tests/events/test_router.py covers it)."""
    if response.status_code != 422:
        return False
    return b"ahead of the server's clock" in response.content


def _foreign_cursor_refused(response: Any) -> bool:
    """An export's ``events_after`` that this service did not give (tests/profiles/
    test_export.py covers it): a cursor is opaque, its schema can only say "a string"."""
    if response.status_code != 400:
        return False
    return b'"invalid_cursor"' in response.content


def _view_with_fields_refused(response: Any) -> bool:
    """``view`` and ``fields`` together (tests/enrich/views cover it)."""
    if response.status_code != 422:
        return False
    return b'"view_and_fields"' in response.content


@schemathesis.check
def positive_data_acceptance_but_typed_values(ctx: Any, response: Any, case: Any) -> bool | None:
    """The built-in check, except for identifier values that are invalid for their type."""
    try:
        return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]
    except Failure:
        if (
            _typed_identifier_value_refused(response)
            or _future_event_refused(response)
            or _view_with_fields_refused(response)
            or _foreign_cursor_refused(response)
        ):
            return None
        raise


def _profile_id(response: Any) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("profile_id") if isinstance(body, dict) else None


def _erased_ids(ctx: Any, case: Any) -> set[str]:
    """The ``profile_id`` each DELETE before ``case`` erased, as the write before it answered."""
    erased = set()
    for deleted in ctx.internals.find_related(case_id=case.id):
        if deleted.operation.method.lower() != "delete":
            continue
        parent = ctx.internals.find_parent(case_id=deleted.id)
        answer = ctx.internals.find_response(case_id=parent.id) if parent else None
        profile_id = _profile_id(answer) if answer is not None else None
        if profile_id is None:
            return set()  # the erased profile is not known: the built-in verdict stands
        erased.add(profile_id)
    return erased


@schemathesis.check
def use_after_free_of_the_same_profile(ctx: Any, response: Any, case: Any) -> bool | None:
    """The built-in check, unless the profile found is a new one, not the one erased."""
    try:
        return use_after_free(ctx, response, case)  # type: ignore[no-any-return]
    except Failure:
        found = _profile_id(response)
        erased = _erased_ids(ctx, case)
        if found is not None and erased and found not in erased:
            return None
        raise
