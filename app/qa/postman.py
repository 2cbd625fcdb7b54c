"""A Postman v2.1 collection and environment, generated from the OpenAPI document.

Nothing here knows the API: folders are the OpenAPI tags, requests are the operations, one per
named request example, with the documented parameter examples, bodies and media types. What
a Personalize Connection does is added around them: OAuth 2.0 client credentials at the
collection level (a pre-request script fetches a token with ``{{client_id}}`` and
``{{client_secret}}`` and refreshes it a minute before it expires, so newman and the Collection
Runner work unattended; Postman's "Get New Access Token" works too), and Personalize's default
headers on every request. Each request has a test that checks the status is one of the
operation's documented 2xx statuses (and, where the OpenAPI document pairs a request example
with an answer example of the same name, the answer's ``found``).

Requests within a folder run creates first, then reads, then deletes (POST, PUT, GET, PATCH,
DELETE), so a collection run leaves the demo data set as it found it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
METHOD_ORDER = {"POST": 0, "PUT": 1, "GET": 2, "PATCH": 3, "DELETE": 4}
# What Personalize sends on every Connection request (Content-Type is added per body).
PERSONALIZE_HEADERS = (("Accept", "application/json"), ("Accept-Encoding", "gzip"))
# A fixed namespace, so the same API always gives the same collection id.
NAMESPACE = uuid.UUID("8f7c3d52-61a4-4d0e-9a57-3b1f0c2e9d41")

TOKEN_SCRIPT = """\
// OAuth 2.0 client credentials, like a Personalize Connection: fetch a token with
// {{client_id}} and {{client_secret}} (client_secret_post) and refresh it a minute before it
// expires. Postman's "Get New Access Token" (collection Authorization tab) works as well.
const token = pm.collectionVariables.get("access_token");
const expiresAt = Number(pm.collectionVariables.get("access_token_expires_at") || 0);
if (!token || Date.now() > expiresAt - 60000) {
    const form = [
        { key: "grant_type", value: "client_credentials" },
        { key: "client_id", value: pm.variables.replaceIn("{{client_id}}") },
        { key: "client_secret", value: pm.variables.replaceIn("{{client_secret}}") },
    ];
    const scope = pm.variables.replaceIn("{{scope}}");
    if (scope && scope !== "{{scope}}") {
        form.push({ key: "scope", value: scope });
    }
    pm.sendRequest({
        url: pm.variables.replaceIn("{{base_url}}/oauth/token"),
        method: "POST",
        header: { Accept: "application/json" },
        body: { mode: "urlencoded", urlencoded: form },
    }, function (err, res) {
        if (err || res.code !== 200) {
            console.error("token request failed", err || res.code, res && res.text());
            return;
        }
        const answer = res.json();
        pm.collectionVariables.set("access_token", answer.access_token);
        pm.collectionVariables.set(
            "access_token_expires_at", String(Date.now() + answer.expires_in * 1000)
        );
    });
}
"""


def collection(spec: dict[str, Any], base_url: str = DEFAULT_BASE_URL) -> dict[str, Any]:
    """The whole API as a Postman v2.1 collection."""
    info = spec.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    folders: dict[str, list[dict[str, Any]]] = {tag: [] for tag in _tag_order(spec)}
    for path, method, operation in _operations(spec):
        tag = (operation.get("tags") or ["API"])[0]
        folders.setdefault(tag, []).extend(_requests(spec, path, method, operation))
    descriptions = {tag.get("name"): tag.get("description", "") for tag in spec.get("tags", [])}
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(NAMESPACE, title)),
            "name": title,
            "description": (info.get("description") or "").strip()
            + "\n\nGenerated from the OpenAPI document by `enrich postman`. Set `client_id` "
            "and `client_secret` (and `base_url`) in the environment or the collection "
            "variables; tokens are fetched and refreshed by the collection's pre-request "
            "script.",
            "schema": SCHEMA_URL,
        },
        "auth": _collection_auth(),
        "event": [_script("prerequest", TOKEN_SCRIPT)],
        "variable": [
            _variable("base_url", base_url, "the service's base URL, without a trailing /"),
            _variable("client_id", "", "an OAuth client: enrich clients create"),
            _variable("client_secret", "", "its secret (printed once)"),
            _variable("scope", "", "optional: space-separated scopes; empty: all"),
            _variable("access_token", "", "set by the pre-request script"),
            _variable("access_token_expires_at", "0", "set by the pre-request script (ms)"),
        ],
        "item": [
            {"name": tag, "description": descriptions.get(tag, ""), "item": items}
            for tag, items in folders.items()
            if items
        ],
    }


def environment(
    base_url: str = DEFAULT_BASE_URL, client_id: str = "", client_secret: str = ""
) -> dict[str, Any]:
    """A Postman environment with the three values a user fills in."""
    return {
        "id": str(uuid.uuid5(NAMESPACE, f"environment {base_url}")),
        "name": f"enrich ({base_url})",
        "values": [
            {"key": "base_url", "value": base_url, "type": "default", "enabled": True},
            {"key": "client_id", "value": client_id, "type": "default", "enabled": True},
            {"key": "client_secret", "value": client_secret, "type": "secret", "enabled": True},
        ],
        "_postman_variable_scope": "environment",
    }


def _tag_order(spec: dict[str, Any]) -> list[str]:
    order = [tag["name"] for tag in spec.get("tags", []) if "name" in tag]
    for _, _, operation in _operations(spec):
        for tag in operation.get("tags") or ["API"]:
            if tag not in order:
                order.append(tag)
    return order


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    found = [
        (path, method.upper(), operation)
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method.upper() in METHOD_ORDER
    ]
    # Stable: within a method, the document's order.
    yield from sorted(found, key=lambda entry: METHOD_ORDER[entry[1]])


def _requests(
    spec: dict[str, Any], path: str, method: str, operation: dict[str, Any]
) -> list[dict[str, Any]]:
    summary = operation.get("summary") or f"{method} {path}"
    body = operation.get("requestBody", {}).get("content", {})
    media, content = next(iter(body.items())) if body else (None, {})
    examples = _body_examples(spec, content)
    items = []
    for key, example_summary, value in examples or [(None, None, None)]:
        name = f"{summary}: {example_summary}" if example_summary and len(examples) > 1 else summary
        request = {
            "method": method,
            "header": _headers(media),
            "url": _url(path, operation),
            "description": (operation.get("description") or "").strip(),
        }
        if media is not None and value is not None:
            request["body"] = _body(media, value)
        auth = _auth(spec, operation)
        if auth is not None:
            request["auth"] = auth
        items.append(
            {
                "name": name,
                "request": request,
                "event": [_script("test", _test(operation, key))],
                "response": _saved_answers(operation, name, request),
            }
        )
    return items


def _body_examples(
    spec: dict[str, Any], content: dict[str, Any]
) -> list[tuple[str | None, str | None, Any]]:
    if "examples" in content:
        return [
            (key, example.get("summary") or key, example.get("value"))
            for key, example in content["examples"].items()
        ]
    if "example" in content:
        return [(None, None, content["example"])]
    schema = _resolve(spec, content.get("schema", {}))
    if schema.get("examples"):
        return [(None, None, schema["examples"][0])]
    return []


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if not ref.startswith("#/"):
        return schema
    target: Any = spec
    for part in ref[2:].split("/"):
        target = target.get(part, {})
    return target if isinstance(target, dict) else {}


def _headers(media: str | None) -> list[dict[str, str]]:
    headers = [{"key": key, "value": value} for key, value in PERSONALIZE_HEADERS]
    if media is not None:
        headers.append({"key": "Content-Type", "value": media})
    return headers


def _url(path: str, operation: dict[str, Any]) -> dict[str, Any]:
    parameters = operation.get("parameters", [])
    segments = [
        f":{segment[1:-1].split(':')[0]}" if segment.startswith("{") else segment
        for segment in path.strip("/").split("/")
    ]
    url: dict[str, Any] = {"host": ["{{base_url}}"], "path": segments}
    variables = [
        {
            "key": parameter["name"],
            "value": str(_example(parameter) or ""),
            "description": parameter.get("description", ""),
        }
        for parameter in parameters
        if parameter.get("in") == "path"
    ]
    query = [
        {
            "key": parameter["name"],
            "value": str(_example(parameter) or ""),
            "description": parameter.get("description", ""),
            "disabled": _example(parameter) is None,
        }
        for parameter in parameters
        if parameter.get("in") == "query"
    ]
    if variables:
        url["variable"] = variables
    if query:
        url["query"] = query
    raw_query = "&".join(f"{q['key']}={q['value']}" for q in query if not q["disabled"])
    url["raw"] = "{{base_url}}/" + "/".join(segments) + (f"?{raw_query}" if raw_query else "")
    return url


def _example(parameter: dict[str, Any]) -> Any:
    if "example" in parameter:
        return parameter["example"]
    for source in (parameter, parameter.get("schema", {})):
        if source.get("examples"):
            examples = source["examples"]
            return examples[0] if isinstance(examples, list) else None
    return None


def _body(media: str, value: Any) -> dict[str, Any]:
    if media == "application/x-www-form-urlencoded" and isinstance(value, dict):
        return {
            "mode": "urlencoded",
            "urlencoded": [{"key": k, "value": str(v)} for k, v in value.items()],
        }
    raw = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    body: dict[str, Any] = {"mode": "raw", "raw": raw}
    if "json" in media:
        body["options"] = {"raw": {"language": "json"}}
    return body


def _auth(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """None inherits the collection's OAuth 2.0; client endpoints use HTTP Basic."""
    schemes = spec.get("components", {}).get("securitySchemes", {})
    requirements = operation.get("security", [])
    kinds = {schemes.get(name, {}).get("type") for req in requirements for name in req}
    schemes_basic = {
        schemes.get(name, {}).get("scheme") for req in requirements for name in req
    } & {"basic"}
    if "oauth2" in kinds:
        return None
    form = operation.get("requestBody", {}).get("content", {})
    form_fields = form.get("application/x-www-form-urlencoded", {}).get("schema", {})
    if schemes_basic or "client_secret" in form_fields.get("properties", {}):
        return {
            "type": "basic",
            "basic": [
                {"key": "username", "value": "{{client_id}}", "type": "string"},
                {"key": "password", "value": "{{client_secret}}", "type": "string"},
            ],
        }
    return {"type": "noauth"}


def _success_statuses(operation: dict[str, Any]) -> list[int]:
    codes = [int(code) for code in operation.get("responses", {}) if str(code).startswith("2")]
    return sorted(codes) or [200]


def _test(operation: dict[str, Any], example_key: str | None) -> str:
    statuses = _success_statuses(operation)
    listed = ", ".join(map(str, statuses))
    lines = [
        f'pm.test("status is {" or ".join(map(str, statuses))}", function () {{',
        f"    pm.expect(pm.response.code, pm.response.text()).to.be.oneOf([{listed}]);",
        "});",
    ]
    answer = _paired_answer(operation, example_key)
    if isinstance(answer, dict) and "found" in answer:
        found = "true" if answer["found"] else "false"
        lines += [
            f'pm.test("found is {found}", function () {{',
            f"    pm.expect(pm.response.json().found).to.eql({found});",
            "});",
        ]
    return "\n".join(lines) + "\n"


def _paired_answer(operation: dict[str, Any], example_key: str | None) -> Any:
    if example_key is None:
        return None
    for code in _success_statuses(operation):
        content = operation.get("responses", {}).get(str(code), {}).get("content", {})
        examples = content.get("application/json", {}).get("examples", {})
        if example_key in examples:
            return examples[example_key].get("value")
    return None


def _saved_answers(
    operation: dict[str, Any], name: str, request: dict[str, Any]
) -> list[dict[str, Any]]:
    """The documented 2xx examples, as Postman's saved responses."""
    saved = []
    for code in _success_statuses(operation):
        response = operation.get("responses", {}).get(str(code), {})
        content = response.get("content", {}).get("application/json", {})
        examples = [
            (example.get("summary", key), example.get("value"))
            for key, example in content.get("examples", {}).items()
        ]
        if "example" in content:
            examples.append((response.get("description", str(code)), content["example"]))
        for summary, value in examples:
            saved.append(
                {
                    "name": f"{name}: {summary}",
                    "originalRequest": request,
                    "status": response.get("description", ""),
                    "code": code,
                    "_postman_previewlanguage": "json",
                    "header": [{"key": "Content-Type", "value": "application/json"}],
                    "body": json.dumps(value, indent=2),
                }
            )
    return saved


def _script(listen: str, source: str) -> dict[str, Any]:
    return {"listen": listen, "script": {"type": "text/javascript", "exec": source.splitlines()}}


def _variable(key: str, value: str, description: str) -> dict[str, Any]:
    return {"key": key, "value": value, "type": "string", "description": description}


def _collection_auth() -> dict[str, Any]:
    settings = {
        "grant_type": "client_credentials",
        "accessTokenUrl": "{{base_url}}/oauth/token",
        "clientId": "{{client_id}}",
        "clientSecret": "{{client_secret}}",
        "client_authentication": "header",
        "scope": "{{scope}}",
        "tokenName": "enrich",
        "accessToken": "{{access_token}}",
        "tokenType": "Bearer",
        "addTokenTo": "header",
        "headerPrefix": "Bearer",
    }
    return {
        "type": "oauth2",
        "oauth2": [{"key": k, "value": v, "type": "string"} for k, v in settings.items()],
    }
