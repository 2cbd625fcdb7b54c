"""The use-after-free check of schemathesis_hooks: a profile erased through one identifier and
a new one found through it later are two resources; the erased one found again is a failure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from schemathesis.openapi.checks import UseAfterFree

from tests.qa import schemathesis_hooks as hooks


@dataclass
class Operation:
    method: str


@dataclass
class Case:
    id: str
    method: str

    @property
    def operation(self) -> Operation:
        return Operation(self.method)


@dataclass
class Response:
    body: Any

    @property
    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


@dataclass
class Internals:
    """PUT (answered with ``written``) -> DELETE -> GET, as the stateful phase links them."""

    written: Any
    cases: dict[str, Case] = field(
        default_factory=lambda: {
            "put": Case("put", "PUT"),
            "delete": Case("delete", "DELETE"),
            "get": Case("get", "GET"),
        }
    )

    def find_related(self, case_id: str) -> list[Case]:
        return [self.cases["delete"]] if case_id == "get" else []

    def find_parent(self, case_id: str) -> Case | None:
        return self.cases["put"] if case_id == "delete" else None

    def find_response(self, case_id: str) -> Response | None:
        return {"put": Response(self.written), "delete": Response(None)}.get(case_id)


@dataclass
class Context:
    internals: Internals


@pytest.fixture(autouse=True)
def built_in_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in check found the GET after the DELETE answered 200."""

    def fails(ctx: Any, response: Any, case: Any) -> bool:
        raise UseAfterFree(operation="GET", message="still there", free="DELETE", usage="GET")

    monkeypatch.setattr(hooks, "use_after_free", fails)


def check(written: Any, found: Any) -> bool | None:
    ctx = Context(Internals(written))
    return hooks.use_after_free_of_the_same_profile(
        ctx, Response(found), ctx.internals.cases["get"]
    )


def test_a_new_profile_behind_the_erased_identifier_passes() -> None:
    assert check({"profile_id": "old"}, {"profile_id": "new"}) is None


def test_the_erased_profile_found_again_fails() -> None:
    with pytest.raises(UseAfterFree):
        check({"profile_id": "old"}, {"profile_id": "old"})


def test_when_the_erased_profile_is_unknown_the_built_in_verdict_stands() -> None:
    with pytest.raises(UseAfterFree):
        check({"error": "not_found"}, {"profile_id": "new"})
    with pytest.raises(UseAfterFree):
        check({"profile_id": "old"}, ["not", "a", "profile"])
