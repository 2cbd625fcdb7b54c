"""The OpenAPI document describes every operation, and its patterns are the service's rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.patterns import (
    ABSENT_TEXT_PATTERN,
    TYPE_NAME_PATTERN,
    compiled,
    present_text_pattern,
)
from app.core.settings import Settings
from app.enrich.fields import FieldsError, parse_fields
from app.enrich.schemas import FIELDS_PATTERN
from app.events.schemas import AMOUNT_PATTERN, amount_of
from app.identity.identifiers import is_absent
from app.main import create_app
from app.profiles.schemas import NUMERIC_TEXT, _score

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings(_env_file=None, log_level="WARNING")).openapi()  # type: ignore[call-arg]


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


class TestOpenApiDocument:
    def test_every_operation_has_a_summary_a_description_and_a_tag(
        self, spec: dict[str, Any]
    ) -> None:
        for method, path, operation in operations(spec):
            assert operation.get("summary"), (method, path)
            assert len(operation.get("description", "")) > 20, (method, path)
            assert operation.get("tags"), (method, path)

    def test_every_error_response_has_a_json_schema(self, spec: dict[str, Any]) -> None:
        for method, path, operation in operations(spec):
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    content = response.get("content", {}).get("application/json", {})
                    assert content.get("schema"), (method, path, status)

    def test_protected_operations_document_oauth_and_its_errors(self, spec: dict[str, Any]) -> None:
        scheme = spec["components"]["securitySchemes"]["OAuth2"]
        assert scheme["type"] == "oauth2"
        assert scheme["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
        protected = [
            (method, path, op)
            for method, path, op in operations(spec)
            if any("OAuth2" in requirement for requirement in op.get("security", []))
        ]
        assert {path for _, path, _ in protected} >= {
            "/v1/enrich",
            "/v1/events",
            "/v1/profiles/bulk",
            "/v1/profiles/{id_type}/{id_value}",
        }
        for method, path, operation in protected:
            responses = operation["responses"]
            for status in ("401", "403"):
                assert "WWW-Authenticate" in responses[status].get("headers", {}), (method, path)

    @pytest.mark.parametrize(
        ("method", "path", "statuses"),
        [
            ("POST", "/v1/enrich", {"400", "401", "403", "413", "422", "503"}),
            ("PUT", "/v1/profiles/{id_type}/{id_value}", {"400", "409", "413", "422"}),
            ("PATCH", "/v1/profiles/{id_type}/{id_value}", {"404", "409", "415", "422"}),
            ("DELETE", "/v1/profiles/{id_type}/{id_value}", {"400", "404"}),
            ("POST", "/v1/profiles/bulk", {"400", "413", "415"}),
            ("POST", "/v1/events", {"400", "409", "413", "422"}),
        ],
    )
    def test_the_errors_each_operation_can_answer_are_listed(
        self, spec: dict[str, Any], method: str, path: str, statuses: set[str]
    ) -> None:
        operation = spec["paths"][path][method.lower()]
        assert statuses <= set(operation["responses"])
        for status in statuses:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert resolve(spec, schema)["properties"].keys() == {"error", "detail"}

    def test_enrich_examples_are_a_found_and_an_unknown_guest(self, spec: dict[str, Any]) -> None:
        operation = spec["paths"]["/v1/enrich"]["post"]
        requests = operation["requestBody"]["content"]["application/json"]["examples"]
        answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
        assert requests["demo_guest"]["value"]["identifiers"] == {"email": "demo@example.com"}
        assert answers["demo_guest"]["value"]["found"] is True
        assert answers["unknown_guest"]["value"]["found"] is False
        assert set(answers["unknown_guest"]["value"]) == set(answers["demo_guest"]["value"])

    def test_every_request_body_has_an_example(self, spec: dict[str, Any]) -> None:
        for method, path, operation in operations(spec):
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                schema = resolve(spec, content.get("schema", {}))
                assert (
                    content.get("example") or content.get("examples") or schema.get("examples")
                ), (method, path, media)


# Characters that matter to the rules, and a few that do not.
TEXT = st.text(
    alphabet=st.sampled_from(
        [
            *"traitsmeticsgnd.,_ ${}TRAxyz0123456789+-",
            *("\t", "\n", "\x1c", "\x85", "\u2003", "\ufeff", "\x00", "é"),
        ]
    ),
    max_size=40,
)


def accepts(function: Any, value: Any) -> bool:
    try:
        function(value)
    except (FieldsError, ValueError):
        return False
    return True


class TestDocumentedPatterns:
    """What the schema allows, the service takes, and the other way round."""

    @settings(max_examples=3000, deadline=None)
    @given(TEXT)
    def test_fields(self, text: str) -> None:
        assert bool(compiled(FIELDS_PATTERN).match(text)) == accepts(parse_fields, text)

    @settings(max_examples=2000, deadline=None)
    @given(TEXT)
    def test_present_and_absent_text(self, text: str) -> None:
        stripped = text.strip()
        present = not is_absent(text) and "\x00" not in stripped and len(stripped) <= 12
        assert bool(compiled(present_text_pattern(12)).match(text)) == present
        assert bool(compiled(ABSENT_TEXT_PATTERN).match(text)) == is_absent(text)

    @settings(max_examples=2000, deadline=None)
    @given(st.one_of(TEXT, st.from_regex(AMOUNT_PATTERN.replace("$", "\\Z"))))
    def test_purchase_amount_text(self, text: str) -> None:
        assert bool(compiled(AMOUNT_PATTERN).match(text)) == accepts(amount_of, text)

    @settings(max_examples=1000, deadline=None)
    @given(st.one_of(TEXT, st.from_regex(NUMERIC_TEXT.replace("$", "\\Z"))))
    def test_recommendation_score_text(self, text: str) -> None:
        assert bool(compiled(NUMERIC_TEXT).match(text)) == accepts(_score, text)

    @pytest.mark.parametrize(
        ("name", "valid"),
        [("email", True), ("Email", True), ("x9_", True), ("9x", False), (" email", False)],
    )
    def test_type_names(self, name: str, valid: bool) -> None:
        assert bool(compiled(TYPE_NAME_PATTERN).match(name)) is valid
