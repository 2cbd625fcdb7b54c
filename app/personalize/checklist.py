"""A connection definition (``app.personalize.definition``) as steps to follow in
Personalize's UI, for those who create the connection by hand rather than through the REST API.
The UI's names are Sitecore's ("Name and authenticate a connection to a data system or
analytical model", "Configure the request using a GET method" / "... a POST or PUT method");
the values are this service's."""

from __future__ import annotations

import json
from typing import Any


def checklist(definition: dict[str, Any]) -> str:
    """The steps, as plain text (Markdown-friendly)."""
    request = definition["request"]
    lines = [
        f"Connect Sitecore Personalize to enrich: {definition['name']}",
        "",
        "1. Developer center > Connections > Create > AI or Data System.",
        f"   Name: {definition['name']}   (no hyphens)",
        *_authenticate(definition),
        "   Test the authentication, then Next.",
        f"3. Configure request: {request['requestType']}",
        f"   Request URL ........... {request['connectionUrl']}",
        "   Default headers: Accept application/json, Accept-Encoding gzip"
        + (", Content-Type application/json" if request["requestType"] != "GET" else ""),
        f"   Connection Timeout .... {definition['connectionTimeout']} ms",
        f"   Read Timeout .......... {definition['socketTimeout']} ms",
    ]
    if "requestBody" in request:
        body = json.dumps(json.loads(request["requestBody"]), indent=2)
        lines += ["   Request Body:", *[f"     {line}" for line in body.splitlines()]]
    lines += _test_and_map(definition)
    return "\n".join(lines) + "\n"


def _authenticate(definition: dict[str, Any]) -> list[str]:
    """Step 2: OAuth 2 with the client's secret, or none with its API key in a header."""
    auth = definition["auth"]
    tls = ["   Use mutual TLS: on (Personalize's client certificate; tokens are bound to it)."]
    tls = tls if definition.get("useMutualTls") else []
    if auth["authType"] == "NONE":
        headers = [f"     {h['name']} = {h['value']}" for h in definition["customHeaders"]]
        return ["2. Authenticate: None. Headers (Show headers):", *headers, *tls]
    lines = [
        "2. Authenticate: OAuth 2.",
        f"   Access Token URL ...... {auth['accessTokenUrl']}",
        f"   Authentication option . {auth['authOption'].title()}",
        f"   Client ID ............. {auth['clientId']}",
        f"   Client Secret ......... {auth['clientSecret'] or '(leave it empty: the certificate)'}",
        "   URL encoded form (Show URL encoded form):",
        *[f"     {item['name']} = {item['value']}" for item in auth["formUrlEncodedItems"]],
    ]
    if auth["authOption"] == "HEADER":
        lines += [
            "   If the tenant asks for the Basic header itself (Show headers):",
            "     Authorization = Basic <base64 of CLIENT_ID:CLIENT_SECRET>",
            '     (printf \'%s:%s\' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)',
        ]
    return lines + tls


def _test_and_map(definition: dict[str, Any]) -> list[str]:
    inputs = definition["inputMappings"]
    lines = [
        "4. Test: give each parameter a value (no quotes here). The demo data's test guest:",
        *[f"     {item['key']} = {item['exampleValue'] or '<a value>'}" for item in inputs],
        "   Press Test: the answer is 200 with found, matched, traits, segments, metrics,",
        "   recommendations, updated_at and stale, known guest or not.",
        "5. Map output (label <- response field, type):",
        *[
            f"     {out['label']} <- {out['outputReference']} ({out['type']})"
            for out in definition["outputMappings"]
        ],
        "6. Save. In a decision model variant, add the Data System and map each request input",
        '   in double quotes ("..."); use at most two data-system connections per variant.',
        "",
        "Before Personalize calls it, run the same request from here:",
        "  enrich personalize connection ... > connection.json",
        "  enrich personalize test connection.json "
        + " ".join(f"--input {i['key']}={i['exampleValue'] or '...'}" for i in inputs)
        + _credentials(definition),
    ]
    return lines


def _credentials(definition: dict[str, Any]) -> str:
    """What ``enrich personalize test`` needs besides the definition."""
    given = ' --api-key "$API_KEY"'
    if definition["auth"]["authType"] != "NONE":
        given = ' --secret "$CLIENT_SECRET"' if definition["auth"]["clientSecret"] else ""
    if definition.get("useMutualTls"):
        given += " --cert client.pem --key client.key"
    return given
