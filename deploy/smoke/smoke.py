"""The API smoke of deploy/image-smoke.sh: a token, a write then a read, and an enrich call.

Usage: python3 smoke.py BASE_URL CLIENT_ID CLIENT_SECRET   (standard library only: it runs with
whatever Python the host has, outside the project's venv). Exits non-zero on the first failure.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

RETRIES = 3


def call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    for attempt in range(1, RETRIES + 1):
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer_headers, raw = (
                    response.status,
                    dict(response.headers),
                    response.read(),
                )
        except urllib.error.HTTPError as error:
            status, answer_headers, raw = error.code, dict(error.headers), error.read()
        if status != 503 or attempt == RETRIES:
            break
        # 503 says "retry shortly" (a deadline passed on a busy machine): retry as a client would
        print(f"     {method} {url}: 503, retrying ({attempt}/{RETRIES - 1})")
        time.sleep(1)
    return status, answer_headers, json.loads(raw) if raw else None


def expect(condition: bool, what: str, detail: object) -> None:
    if not condition:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)
    print(f"ok   {what}")


def main(base: str, client_id: str, secret: str) -> None:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    status, _, token = call(
        "POST",
        f"{base}/oauth/token",
        b"grant_type=client_credentials",
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    expect(status == 200 and token.get("token_type") == "Bearer", "POST /oauth/token", token)
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    json_headers = {**bearer, "Content-Type": "application/json"}

    email = "image-smoke@example.com"
    path = f"{base}/v1/profiles/email/{urllib.parse.quote(email)}"
    document = {
        "identifiers": {"email": email, "crm_id": "SMOKE-1", "phone": "+44 20 7946 0958"},
        "traits": {"tier": "gold"},
        "segments": ["smoke"],
        "metrics": {"lifetime_value": 42.5},
        "source": "image-smoke",
    }
    status, _, written = call("PUT", path, json.dumps(document).encode(), json_headers)
    expect(status in (200, 201), f"PUT /v1/profiles/email/... ({status})", written)
    status, _, read = call("GET", path, headers=bearer)
    expect(
        status == 200
        and read["traits"] == {"tier": "gold"}
        and read["identifiers"].get("phone") == "+442079460958",
        "GET /v1/profiles/... (the write; the phone in E.164)",
        read,
    )

    query = {"identifiers": {"crm_id": "SMOKE-1"}, "fields": ["traits.tier", "segments"]}
    status, headers, answer = call(
        "POST", f"{base}/v1/enrich", json.dumps(query).encode(), json_headers
    )
    expect(
        status == 200 and answer["found"] and answer["traits"] == {"tier": "gold"},
        f"POST /v1/enrich (X-Cache: {headers.get('X-Cache') or headers.get('x-cache')})",
        answer,
    )
    status, _, unknown = call("GET", f"{base}/v1/enrich?email=nobody%40example.com", headers=bearer)
    expect(status == 200 and unknown["found"] is False, "GET /v1/enrich (unknown guest)", unknown)
    status, _, refused = call("POST", f"{base}/v1/enrich", json.dumps(query).encode())
    expect(status == 401, "POST /v1/enrich without a token is 401", refused)


if __name__ == "__main__":
    main(*sys.argv[1:4])
