"""Production-like load on enrich: what Personalize Connections and destinations send.

Each simulated user is one Connection: it fetches an OAuth 2.0 client-credentials token
(client_secret_basic), keeps it until shortly before it expires (or a 401), and sends a mix of

- ``enrich_email``: POST /v1/enrich by email, a known guest (``found: true`` expected)
- ``enrich_guest_ref``: the Personalize template shape, guest_ref then an unfilled email
- ``enrich_get``: GET /v1/enrich?email=... (the GET form of a Connection)
- ``enrich_unknown``: a guest nobody knows (``found: false`` expected, still a 200)
- ``event``: POST /v1/events, a purchase or a page view with a fresh event_id (202)
- ``patch``: PATCH /v1/profiles/email/{email}, a merge patch of a trait (cache invalidation)

with Personalize's default headers. Known guests come from the demo data set (the same
generator as ``enrich demo --profiles N``), so load the same N first.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 2m --host http://127.0.0.1:8000 \\
        --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" --target-rps 200 \\
        --mix enrich_email=50,enrich_guest_ref=20,enrich_unknown=15,event=10,patch=5 \\
        --csv out/enrich --html out/enrich.html

Options (also as environment variables): --client-id (LOCUST_CLIENT_ID), --client-secret
(LOCUST_CLIENT_SECRET), --mix (LOCUST_MIX), --target-rps (LOCUST_TARGET_RPS; 0: as fast as
possible), --profiles (LOCUST_PROFILES: the demo data set's size), --token-refresh-seconds
(LOCUST_TOKEN_REFRESH_SECONDS: refresh sooner than the token's expiry, to load the token
endpoint too).
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, constant_pacing, events, task

DEFAULT_MIX = "enrich_email=50,enrich_guest_ref=15,enrich_get=5,enrich_unknown=15,event=10,patch=5"
PERSONALIZE_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
REFRESH_MARGIN = 0.9  # of the token's lifetime, like a client that refreshes early


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--client-id", env_var="LOCUST_CLIENT_ID", default="", help="OAuth client")
    parser.add_argument(
        "--client-secret", env_var="LOCUST_CLIENT_SECRET", default="", help="its secret"
    )
    parser.add_argument(
        "--mix", env_var="LOCUST_MIX", default=DEFAULT_MIX, help="name=weight,... of the tasks"
    )
    parser.add_argument(
        "--target-rps",
        env_var="LOCUST_TARGET_RPS",
        type=float,
        default=50.0,
        help="requests per second for all users together (0: no pacing)",
    )
    parser.add_argument(
        "--profiles",
        env_var="LOCUST_PROFILES",
        type=int,
        default=1000,
        help="the demo data set's size (enrich demo --profiles N)",
    )
    parser.add_argument(
        "--token-refresh-seconds",
        env_var="LOCUST_TOKEN_REFRESH_SECONDS",
        type=float,
        default=0.0,
        help="refresh the token this often (0: at 90%% of its lifetime)",
    )


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in EnrichConnection.ACTIONS:
            raise ValueError(
                f"unknown task {name!r} in --mix: use {sorted(EnrichConnection.ACTIONS)}"
            )
        mix[name] = float(weight or 1)
    return mix


class Guests:
    """Known identifiers, from the same generator ``enrich demo`` loads."""

    def __init__(self, profiles: int) -> None:
        from app.ingest.demo import DEMO_EMAIL, demo_profile

        self.emails = [DEMO_EMAIL]
        self.guest_refs = ["demo-guest"]
        for number in range(profiles):
            identifiers = demo_profile(number)["identifiers"]
            self.emails.append(identifiers["email"])
            if "guest_ref" in identifiers:
                self.guest_refs.append(identifiers["guest_ref"])


_guests: Guests | None = None


def guests(profiles: int) -> Guests:
    global _guests
    if _guests is None:
        _guests = Guests(profiles)
    return _guests


class EnrichConnection(FastHttpUser):
    """One Personalize Connection (and destination) calling the service."""

    ACTIONS = ("enrich_email", "enrich_guest_ref", "enrich_get", "enrich_unknown", "event", "patch")

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if not options.client_id or not options.client_secret:
            raise ValueError("set --client-id and --client-secret (or LOCUST_CLIENT_ID/SECRET)")
        self.mix = parse_mix(options.mix)
        self.guests = guests(options.profiles)
        self.token = ""
        self.expires_at = 0.0
        self.fetch_token()

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        if options.target_rps <= 0:
            return 0.0
        runner = self.environment.runner
        users = max(1, (runner.user_count if runner else 0) or options.num_users or 1)
        return constant_pacing(users / options.target_rps)(self)

    # -- the token, like a Connection ----------------------------------------------------------

    def fetch_token(self) -> None:
        options = self.environment.parsed_options
        basic = base64.b64encode(f"{options.client_id}:{options.client_secret}".encode()).decode()
        with self.client.post(
            "/oauth/token",
            data="grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            name="POST /oauth/token",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"token: {response.status_code} {response.text[:200]}")
                self.token, self.expires_at = "", 0.0
                return
            answer = response.json()
            lifetime = float(answer["expires_in"]) * REFRESH_MARGIN
            if options.token_refresh_seconds > 0:
                lifetime = min(lifetime, options.token_refresh_seconds)
            self.token = answer["access_token"]
            self.expires_at = time.monotonic() + lifetime

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        if not self.token or time.monotonic() >= self.expires_at:
            self.fetch_token()
        headers = {**PERSONALIZE_HEADERS, "Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def check(self, response: Any, statuses: tuple[int, ...], found: bool | None = None) -> None:
        if response.status_code == 401:
            self.token = ""  # refetch before the next request, as a Connection would
        if response.status_code not in statuses:
            response.failure(f"{response.status_code}: {response.text[:200]}")
        elif found is not None and response.json().get("found") is not found:
            response.failure(f"expected found={found}: {response.text[:200]}")
        else:
            response.success()

    # -- the traffic mix -----------------------------------------------------------------------

    @task
    def one_request(self) -> None:
        names = list(self.mix)
        action = random.choices(names, weights=[self.mix[n] for n in names])[0]
        getattr(self, action)()

    def enrich(self, body: dict[str, Any], name: str, found: bool) -> None:
        with self.client.post(
            "/v1/enrich",
            json=body,
            headers=self.headers("application/json"),
            name=name,
            catch_response=True,
        ) as response:
            self.check(response, (200,), found)

    def enrich_email(self) -> None:
        email = random.choice(self.guests.emails)
        self.enrich(
            {
                "identifiers": {"email": email.upper() if random.random() < 0.1 else email},
                "fields": ["traits.tier", "traits.first_name", "metrics", "segments"],
            },
            "POST /v1/enrich [email]",
            True,
        )

    def enrich_guest_ref(self) -> None:
        self.enrich(
            {
                "identifiers": {
                    "guest_ref": random.choice(self.guests.guest_refs),
                    "email": "${guest.email}",
                },
                "fields": "traits.tier,metrics.lifetime_value,segments,recommendations",
            },
            "POST /v1/enrich [guest_ref]",
            True,
        )

    def enrich_get(self) -> None:
        email = random.choice(self.guests.emails)
        with self.client.get(
            "/v1/enrich",
            params={"email": email, "fields": "traits.tier,segments"},
            headers=self.headers(),
            name="GET /v1/enrich [email]",
            catch_response=True,
        ) as response:
            self.check(response, (200,), True)

    def enrich_unknown(self) -> None:
        self.enrich(
            {"identifiers": {"email": f"nobody-{uuid.uuid4().hex[:12]}@example.com"}},
            "POST /v1/enrich [unknown]",
            False,
        )

    def event(self) -> None:
        purchase = random.random() < 0.5
        body: dict[str, Any] = {
            "event_id": f"load-{uuid.uuid4()}",
            "type": "purchase" if purchase else "page_view",
            "identifiers": {"email": random.choice(self.guests.emails)},
            "data": {"amount": f"{random.uniform(5, 200):.2f}", "currency": "USD"}
            if purchase
            else {"page": "/running/shoes"},
        }
        with self.client.post(
            "/v1/events",
            json=body,
            headers=self.headers("application/json"),
            name="POST /v1/events",
            catch_response=True,
        ) as response:
            self.check(response, (202,))

    def patch(self) -> None:
        email = random.choice(self.guests.emails)
        with self.client.request(
            "PATCH",
            f"/v1/profiles/email/{email}",
            data=f'{{"traits": {{"last_campaign": "load-{random.randint(1, 9)}"}}}}',
            headers=self.headers("application/merge-patch+json"),
            name="PATCH /v1/profiles/email/[email]",
            catch_response=True,
        ) as response:
            self.check(response, (200,))
