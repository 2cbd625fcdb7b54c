"""A stand-in for Sitecore Personalize's connection runtime: given a connection definition (the
shape ``app.personalize.definition`` makes) and input values, call the service the way a
Personalize connection does, and say what Personalize would have seen.

What it does, step by step (Sitecore's documented behaviour unless marked ours):
- OAuth 2 client credentials: POST the definition's URL encoded form items to the access token
  URL, the client authenticated in the ``Authorization: Basic`` header (the Header option) or
  as ``client_id``/``client_secret`` form fields (the Body option). Or no auth, with custom
  headers (an API key: its placeholder is filled from ``api_key``).
- Mutual TLS (``useMutualTls``): the client certificate ``cert`` is presented to the token
  and the request URLs.
- Fill ``${key}`` in the URL and the body with the inputs (a value is URL-encoded in the URL
  and escaped as JSON string content in the body: ours; Personalize's own escaping is not
  documented). A placeholder without an input stays as written, as the service tolerates.
- Send Personalize's default headers (``Accept: application/json``, ``Accept-Encoding: gzip``,
  ``Content-Type: application/json`` with a body) and an ``X-Correlation-Id``.
- The connect timeout (``connectionTimeout``) and the read timeout (``socketTimeout``) apply
  to both calls, 1000 ms unless the definition says otherwise.
- Map each output: its ``outputReference`` read as a JSON path (``traits.tier``,
  ``$.segments[0]``) in the answer.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from app.personalize.definition import (
    API_KEY_PLACEHOLDER,
    SECRET_PLACEHOLDER,
    TIMEOUT_MS,
    DefinitionError,
)

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
PATH_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")
# The largest answer read whole (larger ones are reported, not mapped).
ANSWER_MAX = 1 << 20
MISSING = object()


@dataclass
class Outcome:
    """What the call came to, as Personalize would have seen it."""

    ok: bool = False
    stage: str = "token"  # where it stopped: token, request or done
    token_status: int | None = None
    status: int | None = None
    token_ms: float = 0.0
    request_ms: float = 0.0
    correlation_id: str = ""
    echoed_correlation_id: str | None = None
    request_id: str | None = None
    error: str | None = None
    answer: Any = None
    answer_chars: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stage": self.stage,
            "token_status": self.token_status,
            "status": self.status,
            "token_ms": round(self.token_ms, 1),
            "request_ms": round(self.request_ms, 1),
            "correlation_id": self.correlation_id,
            "echoed_correlation_id": self.echoed_correlation_id,
            "request_id": self.request_id,
            "error": self.error,
            "answer_chars": self.answer_chars,
            "outputs": self.outputs,
            "missing": self.missing,
        }


def checked(definition: Any) -> dict[str, Any]:
    """The definition, if it has what a call needs; else a DefinitionError saying what not."""
    if not isinstance(definition, dict):
        raise DefinitionError("a connection definition is a JSON object")
    request = definition.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("connectionUrl"), str):
        raise DefinitionError("request.connectionUrl is missing")
    if request.get("requestType", "GET") not in ("GET", "POST", "PUT"):
        raise DefinitionError("request.requestType is GET, POST or PUT")
    auth = definition.get("auth") or {"authType": "NONE"}
    kind = str(auth.get("authType", "NONE")).upper()
    if kind not in ("OAUTH", "NONE"):
        raise DefinitionError("auth.authType is OAUTH or NONE")
    if kind == "OAUTH":
        if not isinstance(auth.get("accessTokenUrl"), str) or not auth.get("clientId"):
            raise DefinitionError("an OAUTH connection needs auth.accessTokenUrl and clientId")
        if str(auth.get("authOption", "HEADER")).upper() not in ("HEADER", "BODY"):
            raise DefinitionError("auth.authOption is HEADER or BODY")
    for name in ("connectionTimeout", "socketTimeout"):
        value = definition.get(name, TIMEOUT_MS)
        if not isinstance(value, int) or not 1 <= value <= 600_000:
            raise DefinitionError(f"{name} is a number of milliseconds (1 to 600000)")
    return definition


def fill(template: str, inputs: dict[str, str], *, in_url: bool) -> str:
    """``${key}`` replaced by its input (escaped for where it goes); unknown keys stay."""

    def value(match: re.Match[str]) -> str:
        given = inputs.get(match.group(1))
        if given is None:
            return match.group(0)
        if in_url:
            return quote(given, safe="")
        return json.dumps(given)[1:-1]  # JSON string content, without the quotes

    return PLACEHOLDER.sub(value, template)


def read_path(document: Any, reference: str) -> Any:
    """The value at ``reference`` (``a.b``, ``$.a.b``, ``a[0].b``) in ``document``, or
    MISSING."""
    path = reference.strip()
    path = path[1:] if path.startswith("$") else path
    current = document
    position = 0
    for match in PATH_STEP.finditer(path):
        if match.start() != position:
            return MISSING
        position = match.end()
        key, index = match.group(1), match.group(2)
        if key is not None and isinstance(current, dict) and key in current:
            current = current[key]
        elif index is not None and isinstance(current, list) and int(index) < len(current):
            current = current[int(index)]
        else:
            return MISSING
    return current if position == len(path) else MISSING


def timeouts(definition: dict[str, Any]) -> httpx.Timeout:
    connect = definition.get("connectionTimeout", TIMEOUT_MS) / 1000
    read = definition.get("socketTimeout", TIMEOUT_MS) / 1000
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


async def run(
    definition: dict[str, Any],
    inputs: dict[str, str],
    *,
    secret: str | None = None,
    api_key: str | None = None,
    verify: bool | str = True,
    cert: tuple[str, str] | None = None,
) -> Outcome:
    """Call the service as Personalize would; the outcome says what happened, never raises
    for the service's failures (a refused token, an error status, a timeout, no JSON).

    ``verify``: whether to check the service's certificate, or the CA file to check it with;
    ``cert``: the client certificate and key files a mutual-TLS connection presents."""
    definition = checked(definition)
    outcome = Outcome(correlation_id=str(uuid.uuid4()))
    auth = definition.get("auth") or {}
    if (definition.get("useMutualTls") or auth.get("useMutualTls")) and cert is None:
        outcome.error = "the connection uses mutual TLS: pass a client certificate and key"
        return outcome
    headers = _custom(definition.get("customHeaders"))
    for name, value in headers.items():
        if value == API_KEY_PLACEHOLDER:
            if not api_key:
                outcome.error = "no API key: pass --api-key (the definition holds a placeholder)"
                return outcome
            headers[name] = api_key
    tls = _tls(verify, cert)
    async with httpx.AsyncClient(timeout=timeouts(definition), verify=tls) as http:
        if str(auth.get("authType", "NONE")).upper() == "OAUTH":
            token = await _token(http, auth, secret, outcome)
            if token is None:
                return outcome
            headers["Authorization"] = f"Bearer {token}"
        outcome.stage = "request"
        await _call(http, definition, inputs, headers, outcome)
    return outcome


def _tls(verify: bool | str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    """The TLS settings of both calls: the service's certificate checked (against the system's
    CAs, or the CA file ``verify``) unless ``verify`` is False; ``cert`` presented if given."""
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def _custom(items: Any) -> dict[str, str]:
    """Custom headers ``[{"name", "value"}]`` (``key`` is taken for ``name`` too)."""
    headers: dict[str, str] = {}
    for item in items or []:
        if isinstance(item, dict):
            name = item.get("name") or item.get("key")
            if name:
                headers[str(name)] = str(item.get("value", ""))
    return headers


async def _token(
    http: httpx.AsyncClient, auth: dict[str, Any], secret: str | None, outcome: Outcome
) -> str | None:
    """The access token, or None with the outcome saying why."""
    given = auth.get("clientSecret")
    secret = secret or (given if given != SECRET_PLACEHOLDER else None)
    if secret is None:
        outcome.error = "no client secret: pass --secret (the definition holds a placeholder)"
        return None
    form = {str(i.get("name") or i.get("key")): str(i.get("value", "")) for i in _items(auth)}
    headers = {"Accept": "application/json", **_custom(auth.get("customHeaders"))}
    client_id = str(auth["clientId"])
    if str(auth.get("authOption", "HEADER")).upper() == "BODY":
        form.update(client_id=client_id, client_secret=secret)
    else:  # RFC 6749 2.3.1: each part form-urlencoded, then base64
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    started = time.perf_counter()
    try:
        response = await http.post(auth["accessTokenUrl"], data=form, headers=headers)
    except httpx.HTTPError as exc:
        outcome.error = f"token request failed: {_failure(exc)}"
        return None
    finally:
        outcome.token_ms = (time.perf_counter() - started) * 1000
    outcome.token_status = response.status_code
    try:
        answer = response.json()
    except ValueError:
        answer = None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if response.status_code != 200 or not isinstance(token, str):
        code = answer.get("error") if isinstance(answer, dict) else None
        outcome.error = f"token request refused: {response.status_code} {code or ''}".strip()
        return None
    return token


def _items(auth: dict[str, Any]) -> list[dict[str, Any]]:
    items = auth.get("formUrlEncodedItems") or []
    return [
        item for item in items if isinstance(item, dict) and (item.get("name") or item.get("key"))
    ]


async def _call(
    http: httpx.AsyncClient,
    definition: dict[str, Any],
    inputs: dict[str, str],
    headers: dict[str, str],
    outcome: Outcome,
) -> None:
    request = definition["request"]
    method = request.get("requestType", "GET")
    url = fill(request["connectionUrl"], inputs, in_url=True)
    body = None
    sent = {"Accept": "application/json", "Accept-Encoding": "gzip", **headers}
    if method in ("POST", "PUT"):
        body = fill(request.get("requestBody") or "", inputs, in_url=False).encode()
        sent["Content-Type"] = "application/json"
    sent["X-Correlation-Id"] = outcome.correlation_id
    started = time.perf_counter()
    try:
        response = await http.request(method, url, content=body, headers=sent)
    except httpx.HTTPError as exc:
        outcome.error = f"request failed: {_failure(exc)}"
        return
    finally:
        outcome.request_ms = (time.perf_counter() - started) * 1000
    outcome.status = response.status_code
    outcome.echoed_correlation_id = response.headers.get("x-correlation-id")
    outcome.request_id = response.headers.get("x-request-id")
    _read_answer(response, definition, outcome)


def _read_answer(response: httpx.Response, definition: dict[str, Any], outcome: Outcome) -> None:
    outcome.answer_chars = len(response.text)
    if outcome.answer_chars > ANSWER_MAX:
        outcome.error = f"the answer is {outcome.answer_chars} characters: too long to map"
        return
    try:
        outcome.answer = response.json()
    except ValueError:
        outcome.error = f"{response.status_code}: the answer is not JSON"
        return
    if not response.is_success:
        outcome.error = f"{response.status_code}: {_error_code(outcome.answer)}"
        return
    for mapping in definition.get("outputMappings") or []:
        if not isinstance(mapping, dict):
            continue
        label = str(mapping.get("label") or mapping.get("outputReference"))
        value = read_path(outcome.answer, str(mapping.get("outputReference", label)))
        if value is MISSING:
            outcome.missing.append(label)
        else:
            outcome.outputs[label] = value
    outcome.stage, outcome.ok = "done", True


def _error_code(answer: Any) -> str:
    if isinstance(answer, dict):
        return str(answer.get("error") or answer.get("detail") or "an error answer")[:200]
    return "an error answer"


def _failure(exc: httpx.HTTPError) -> str:
    """What went wrong, by kind: a timeout names which one."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout (connectionTimeout) passed"
    if isinstance(exc, httpx.ReadTimeout):
        return "read timeout (socketTimeout) passed"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
