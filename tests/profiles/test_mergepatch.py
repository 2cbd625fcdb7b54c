from __future__ import annotations

from typing import Any

import pytest

from app.profiles.mergepatch import merge_patch


class TestMergePatch:
    # RFC 7396, Appendix A.
    @pytest.mark.parametrize(
        ("target", "patch", "result"),
        [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
            ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
            ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
            (["a", "b"], ["c", "d"], ["c", "d"]),
            ({"a": "b"}, ["c"], ["c"]),
            ({"a": "foo"}, None, None),
            ({"a": "foo"}, "bar", "bar"),
            ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
            ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
            ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ],
    )
    def test_rfc_examples(self, target: Any, patch: Any, result: Any) -> None:
        assert merge_patch(target, patch) == result

    def test_target_is_not_modified(self) -> None:
        target = {"a": {"b": 1}}
        merge_patch(target, {"a": {"b": 2}})
        assert target == {"a": {"b": 1}}

    def test_any_depth_merges_without_recursion(self) -> None:
        # 900 levels overflowed the stack before (RecursionError, a 500 on PATCH).
        levels = 5000
        target: dict[str, Any] = {"keep": 1}
        patch: dict[str, Any] = {"drop": None, "new": 2}
        for _ in range(levels):
            target, patch = {"a": target}, {"a": patch}

        merged = merge_patch(target, patch)

        for _ in range(levels):
            merged = merged["a"]
        assert merged == {"keep": 1, "new": 2}
