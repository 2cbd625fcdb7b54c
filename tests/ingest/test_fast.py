"""The import's shortcut path gives exactly what full validation gives, or fails the same way."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from app.identity.identifiers import IdentifierError, write_keys
from app.ingest.demo import demo_guest, demo_profile
from app.ingest.fast import RecordError, keys_of, prepare_document, prepare_raw
from app.profiles import limits
from app.profiles.limits import DocumentLimits, UnstorableError, check_document

EDGE_CASES: list[dict[str, Any]] = [
    {},
    {"identifiers": {"crm_id": 42, "Email": " Mixed@Case.COM ", "phone": "(415) 555-0100"}},
    {"identifiers": {"email": "${guest.email}", "guest_ref": "", "custom_id": "  x  "}},
    {"identifiers": {"phone": "+442079460000", "email_sha256": "A" * 64}},
    {"identifiers": {"crm_id": 1.0}},
    {"identifiers": {"crm_id": True}},
    {"traits": {"a": 1, "nested": {"b": [1, 2.5, None, "x"]}}, "segments": ["s1"]},
    {"segments": [1]},
    {"source": "x" * 101},
    {"source": 5},
    {"colour": "red"},
    {
        "metrics": {
            "order_count": "3",
            "lifetime_value": "12.30",
            "last_order_at": "2026-10-01T12:00:00",
            "last_event_at": "2026-10-01T12:00:00.123+02:00",
            "x": "1e3",
            "y": 2.5,
            "z": None,
        }
    },
    {"metrics": {"order_count": 2.0, "lifetime_value": 10}},
    {"metrics": {"order_count": -1}},
    {"metrics": {"order_count": 1.5}},
    {"metrics": {"lifetime_value": "nan"}},
    {"metrics": {"x": "nan"}},
    {"metrics": {"x": True}},
    {"metrics": {"x": "2026-10-01"}},
    {"metrics": {"last_order_at": "2026-10-01"}},
    {"metrics": {"last_order_at": 5}},
    {"metrics": {"x": "soon"}},
    {"recommendations": [{"score": 1, "name": "n", "product_id": "p"}]},
    {"recommendations": [{"product_id": "p", "score": 0.5, "extra": {"k": [1]}}]},
    {"recommendations": [{"name": "only extras"}, {"product_id": None, "score": None}]},
    {"recommendations": [{"score": True}]},
    {"recommendations": [{"product_id": 5}]},
    {"recommendations": ["x"]},
    {"recommendations": {"product_id": "p"}},
    {"traits": []},
    {"identifiers": {"email": "no-at-sign"}, "metrics": {"x": "soon"}},
    {"identifiers": {"Bad Type": "x"}},
    {"identifiers": {"crm_id": "x" * 321}},
    {"traits": {"big": 2**70, "list": [2**64]}},
    {"traits": {"deep": orjson.loads(b"[" * 40 + b"]" * 40)}},
    {"recommendations": [{"product_id": "a\x00", "score": 0.5}]},
    {"traits": {"x": "\ud800"}},
    {"traits": {"\x00": 1}},
    {"metrics": {"x": float("inf")}},
]


def reference(raw: Any) -> Any:
    try:
        return prepare_document(raw, "US")
    except RecordError as exc:
        return ("error", str(exc))


def shortcut(raw: Any) -> Any:
    try:
        return prepare_raw(raw, "US")
    except RecordError as exc:
        return ("error", str(exc))


class TestPrepareRaw:
    @pytest.mark.parametrize("raw", EDGE_CASES)
    def test_edge_cases_match_full_validation(self, raw: dict[str, Any]) -> None:
        assert shortcut(raw) == reference(raw)

    def test_demo_profiles_match_full_validation(self) -> None:
        documents = [demo_guest()] + [demo_profile(n) for n in range(0, 200_000, 997)]
        for document in documents:
            assert shortcut(document) == reference(document)


class TestKeysOf:
    def test_north_american_numbers_match_libphonenumber(self) -> None:
        rng = random.Random(7)
        for _ in range(3000):
            number = f"+1{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            assert keys_of({"phone": number}, "US") == write_keys({"phone": number}, "GB")

    @pytest.mark.parametrize(
        "identifiers",
        [
            {"phone": "+1 415 555 0100"},
            {"phone": "+11234567890"},
            {"phone": "+1415555010"},
            {"PHONE": "4155550100", "Crm_Id": "C-1"},
            {"email": "A@B.C", "email_sha256": "F" * 64},
            {"email": "\u00a0a@b.c"},
            {"loyalty_no": 12345, "guest_ref": "${guest.ref}"},
        ],
    )
    def test_matches_write_keys(self, identifiers: dict[str, Any]) -> None:
        try:
            expected: Any = write_keys(identifiers, "US")
        except IdentifierError as exc:
            expected = exc.message
        try:
            got: Any = keys_of(identifiers, "US")
        except IdentifierError as exc:
            got = exc.message
        assert got == expected


UNWALKED = [
    b'{"identifiers": {"email": "a@example.com"}, "traits": {"n": [1, {"b": 2}]}}',
    b'{"traits": {"note": "brackets [[[[ {{{{ in text"}}',
    b'{"traits": {"x": "a\\u0000b"}}',
    b'{"traits": {"x": "a\\\\u0000b"}}',  # an escaped backslash, then text: storable
    b'{"traits": {"d": ' + b"[" * 40 + b"]" * 40 + b"}}",
    b'{"traits": {"d": ' + b"[" * 30 + b"]" * 30 + b"}}",
    b'{"traits": {"long": "' + b"x" * 2000 + b'"}}',
    b'{"traits": {"big": 123456789012345678901234567890}}',
]


class TestPassesUnwalked:
    @pytest.mark.parametrize("text", UNWALKED)
    def test_never_passes_what_the_walk_refuses(self, text: bytes) -> None:
        small = DocumentLimits(max_depth=32, max_chars=1000)
        previous = limits.active()
        limits.configure(small)
        try:
            unwalked = limits.passes_unwalked(text)
        finally:
            limits.configure(previous)
        try:
            check_document(orjson.loads(text), small)
            walked = True
        except UnstorableError:
            walked = False
        assert walked or not unwalked
