"""What a view may say, and the answer it gives: fixed keys, nested fields, flat keys,
defaults, for a known and an unknown guest, within the size cap."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.enrich.document import render
from app.enrich.views.definition import (
    MAX_VIEW_FIELDS,
    ViewError,
    compile_view,
    normalize,
    parse_ref,
)
from app.enrich.views.registry import (
    RetiredViewError,
    UnknownViewError,
    ViewNotLoadedError,
    ViewRegistry,
)
from app.platform.sizes import footprint

PROFILE: dict[str, Any] = {
    "profile_id": "p-1",
    "traits": {"tier": "gold", "first_name": "Jane", "address": {"city": "Lyon"}},
    "segments": ["vip"],
    "metrics": {"lifetime_value": 120.5},
    "recommendations": [{"product_id": "SKU-1"}],
    "updated_at": "2026-12-01T10:00:00Z",
}
OFFER = {
    "fields": ["traits.tier", "metrics.lifetime_value", "segments", "traits.address.zip"],
    "rename": {"traits.tier": "tier", "metrics.lifetime_value": "ltv"},
    "defaults": {
        "traits.tier": "standard",
        "traits.address.zip": "none",
        "metrics.lifetime_value": 0,
    },
}


def answer(definition: dict[str, Any], profile: dict[str, Any] | None, cap: int = 8000) -> Any:
    view = compile_view("offer", 1, normalize(definition))
    match = None if profile is None else (("email", "jane@example.com"), profile)
    return orjson.loads(render(match, view, cap))


class TestDefinition:
    def test_a_known_guest_gets_fixed_keys_nested_fields_and_flat_keys(self) -> None:
        got = answer(OFFER, PROFILE)
        assert got == {
            "found": True,
            "matched": "email",
            "profile_id": "p-1",
            "traits": {"address": {"zip": "none"}},
            "segments": ["vip"],
            "tier": "gold",
            "ltv": 120.5,
            "updated_at": "2026-12-01T10:00:00Z",
            "stale": False,
        }
        assert list(got)[-1] == "stale"  # (marking a cached copy stale swaps the last bytes)
        assert PROFILE["traits"]["address"] == {"city": "Lyon"}  # the default went in a copy

    def test_an_unknown_guest_gets_the_same_keys_with_the_defaults(self) -> None:
        assert answer(OFFER, None) == {
            "found": False,
            "matched": None,
            "profile_id": None,
            "traits": {"address": {"zip": "none"}},
            "segments": [],
            "tier": "standard",
            "ltv": 0,
            "updated_at": None,
            "stale": False,
        }

    def test_a_flat_key_without_a_default_is_null_and_always_there(self) -> None:
        definition = {"fields": ["traits.nickname"], "rename": {"traits.nickname": "nick"}}
        assert answer(definition, PROFILE)["nick"] is None
        assert answer(definition, None)["nick"] is None
        assert "traits" not in answer(definition, PROFILE)  # only renamed fields: no root

    def test_a_default_on_a_whole_root_is_for_an_unknown_guest(self) -> None:
        definition = {"fields": ["segments"], "defaults": {"segments": ["anonymous"]}}
        assert answer(definition, None)["segments"] == ["anonymous"]
        assert answer(definition, PROFILE)["segments"] == ["vip"]

    def test_over_the_cap_roots_then_flat_keys_are_cut(self) -> None:
        big = {**PROFILE, "traits": {"bio": "x" * 900, "tier": "gold"}, "segments": ["s"] * 200}
        definition = {"fields": ["segments", "traits.bio"], "rename": {"traits.bio": "bio"}}
        got = answer(definition, big, cap=600)
        assert got["truncated"] is True
        assert got["bio"] is None
        assert got["segments"] == []
        assert len(orjson.dumps(got)) <= 600
        fitted = answer(definition, {**big, "traits": {"bio": "short"}}, cap=600)
        assert fitted["bio"] == "short"
        assert 0 < len(fitted["segments"]) < 200

    @pytest.mark.parametrize(
        ("definition", "says"),
        [
            ({}, "needs fields"),
            ({"fields": ["traits.tier"], "max_age": 60}, "unknown view member"),
            ({"fields": ["traits.tier"], "purpose": "web"}, "unknown consent purpose .web."),
            ({"fields": ["colour"]}, "unknown field"),
            ({"fields": ["found"]}, "traits, metrics, segments or recommendations"),
            ({"fields": ["segments.first"]}, "is a list"),
            ({"fields": ["traits.tier", "traits.tier"]}, "each field once"),
            ({"fields": ["traits.a"], "rename": {"traits.b": "b"}}, "not one of the view"),
            ({"fields": ["traits.a"], "rename": {"traits.a": "found"}}, "not one of"),
            ({"fields": ["traits.a"], "rename": {"traits.a": "two words"}}, "a key is"),
            (
                {"fields": ["traits.a", "traits.b"], "rename": {"traits.a": "k", "traits.b": "k"}},
                "same key",
            ),
            ({"fields": ["traits.a"], "defaults": {"traits.a": "x" * 2000}}, "at most 1024"),
            ({"fields": [f"traits.t{i}" for i in range(MAX_VIEW_FIELDS + 1)]}, "at most 50"),
        ],
    )
    def test_a_bad_definition_is_refused_saying_why(self, definition: Any, says: str) -> None:
        with pytest.raises(ViewError, match=says):
            normalize(definition)

    def test_references(self) -> None:
        assert parse_ref("Web_Offer") == ("web_offer", None)
        assert parse_ref(" web_offer@12 ") == ("web_offer", 12)
        assert parse_ref("${view}") is None
        assert parse_ref("") is None
        for bad in ("web-offer", "offer@0", "offer@x", "@2", 7):
            with pytest.raises(ViewError):
                parse_ref(bad)


class TestRegistry:
    def test_resolves_names_versions_and_says_why_not(self) -> None:
        registry = ViewRegistry(max_bytes=1 << 20)
        one = {"fields": ["traits.tier"]}
        two = {"fields": ["segments"]}
        registry.load(
            [("offer", 3, None, True), ("offer", 2, two, False), ("offer", 1, one, False)]
        )
        assert registry.resolve(("offer", None)).ref == "offer@2"
        assert registry.resolve(("offer", 1)).ref == "offer@1"
        with pytest.raises(RetiredViewError, match="'offer@3' is retired; the latest is"):
            registry.resolve(("offer", 3))
        with pytest.raises(UnknownViewError, match="'offer@4' does not exist"):
            registry.resolve(("offer", 4))
        with pytest.raises(UnknownViewError, match="'other' does not exist"):
            registry.resolve(("other", None))
        registry.load([("offer", 1, None, True)])
        with pytest.raises(RetiredViewError, match="'offer' is retired"):
            registry.resolve(("offer", None))

    def test_is_bounded_in_bytes_latest_versions_first(self) -> None:
        definition = {"fields": [f"traits.t{i}" for i in range(40)]}
        one = compile_view("a", 1, normalize(definition))
        registry = ViewRegistry(max_bytes=footprint(one) * 2 + 2000)
        rows = [(name, v, normalize(definition), False) for name in "ab" for v in (2, 1)]
        registry.load(rows)
        assert registry.bytes <= registry.max_bytes
        assert registry.resolve(("a", None)).ref == "a@2"
        assert registry.resolve(("b", None)).ref == "b@2"
        with pytest.raises(ViewNotLoadedError):
            registry.resolve(("a", 1))
