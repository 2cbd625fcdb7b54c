"""The answer document: serialized within its size cap, cut deterministically."""

from __future__ import annotations

import orjson

from app.enrich.document import answer_document, fit, mark_stale
from app.enrich.fields import parse_fields


def answer(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "found": True,
        "matched": "email",
        "profile_id": "00000000-0000-0000-0000-000000000000",
        "traits": {},
        "segments": [],
        "metrics": {},
        "recommendations": [],
        "updated_at": "2026-01-01T00:00:00Z",
        "stale": False,
    }
    base.update(overrides)
    return base


class TestFit:
    def test_small_answer_is_serialized_as_is(self) -> None:
        document = answer(traits={"a": 1})
        assert orjson.loads(fit(dict(document), 8000)) == document

    def test_recommendations_go_before_segments(self) -> None:
        document = answer(
            segments=[f"segment-{i}" for i in range(20)],
            recommendations=[{"product_id": f"p{i}"} for i in range(200)],
        )
        body = orjson.loads(fit(document, 1000))
        assert body["truncated"] is True
        assert body["segments"] == [f"segment-{i}" for i in range(20)]
        assert len(orjson.dumps(body)) <= 1000

    def test_segments_are_cut_when_recommendations_are_gone(self) -> None:
        document = answer(
            segments=[f"segment-{i:04d}" for i in range(500)],
            recommendations=[{"product_id": "p"}],
        )
        raw = fit(document, 1000)
        body = orjson.loads(raw)
        assert len(raw) <= 1000
        assert body["recommendations"] == []
        assert body["segments"] == [f"segment-{i:04d}" for i in range(len(body["segments"]))]

    def test_characters_not_bytes_are_counted(self) -> None:
        document = answer(segments=["ø" * 10 for _ in range(200)])
        raw = fit(document, 1000)
        assert len(raw.decode()) <= 1000
        assert len(raw) > 1000  # two bytes a character: bytes alone would cut too much


class TestMarkStale:
    """What a caller gets when the cache serves an answer past its freshness (stale: true)."""

    def test_a_fresh_answer_says_stale_and_is_otherwise_the_same(self) -> None:
        document = answer(traits={"note": 'ends with "stale":false}'})
        stale = mark_stale(fit(dict(document), 8000))
        assert orjson.loads(stale) == {**document, "stale": True}
        assert mark_stale(stale) == stale  # marking it again changes nothing


# A matched profile as the answer is made from it.
VIEW = {
    "profile_id": "00000000-0000-0000-0000-000000000000",
    "traits": {"address": {"city": "Paris", "zip": "75001", "street": "x"}, "tier": "gold"},
    "segments": ["vip"],
    "metrics": {"order_count": 3},
    "recommendations": [],
    "updated_at": "2026-01-01T00:00:00Z",
}


class TestSelectedPaths:
    """What ``fields`` picks out of traits: the named paths, nested as in the profile."""

    def picked(self, fields: str) -> object:
        document = answer_document((("email", "jane@example.com"), VIEW), parse_fields(fields))
        return document["traits"]

    def test_two_paths_under_one_parent_are_both_there(self) -> None:
        picked = self.picked("traits.address.city,traits.address.zip,traits.tier")
        assert picked == {"address": {"city": "Paris", "zip": "75001"}, "tier": "gold"}

    def test_a_whole_parent_covers_a_path_inside_it(self) -> None:
        whole = {"address": {"city": "Paris", "zip": "75001", "street": "x"}}
        assert self.picked("traits.address.city,traits.address") == whole
        assert self.picked("traits.address,traits.address.city") == whole
