"""The demo data set and the demo client that `make run` prints.

Profiles are generated from a seed per profile number, so the data set is the same on every
machine and every run, and ``--profiles 2000`` keeps the first 1000 profiles of
``--profiles 1000`` exactly as they were. Times are relative to a fixed reference date, not
to now. Everything loads through the bulk engine, so a second run changes nothing.

The test guest, ``demo@example.com`` (guest_ref ``demo-guest``, crm_id ``CRM-DEMO``, phone
``+14155550100``), has every field a generated profile can have, all filled in.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.clients import ClientService, verify_secret
from app.auth.repository import ClientRepository
from app.core.settings import Settings
from app.ingest.fast import prepare_raw
from app.profiles.bulk.upsert import upsert_prepared
from app.profiles.consent import rules as consent_rules
from app.profiles.documents import PreparedProfile

REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)
SOURCE = "demo"
DEMO_EMAIL = "demo@example.com"
OPTOUT_EMAIL = "optout@example.com"
BATCH = 5000

FIRST_NAMES = (
    "Olivia Liam Emma Noah Ava Oliver Sophia Elijah Isabella James Mia William Amelia Benjamin "
    "Harper Lucas Evelyn Henry Abigail Alexander Emily Mason Ella Michael Elizabeth Ethan Sofia "
    "Daniel Avery Jacob Scarlett Logan Grace Jackson Chloe Sebastian Victoria Jack Riley Aiden "
    "Aria Owen Lily Samuel Aurora Matthew Zoey Joseph Nora Levi Hannah Mateo Layla David Priya "
    "Wei Yuki Fatima Omar Lucia Diego Ingrid Kwame Aisha Mei Ravi Sven Chiara Tomas Leila"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White "
    "Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres "
    "Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts "
    "Kim Patel Chen Muller Rossi Silva Kowalski Andersen Okafor Haddad Tanaka Novak Dubois"
).split()
CITIES = (
    ("New York", "NY"),
    ("Los Angeles", "CA"),
    ("Chicago", "IL"),
    ("Houston", "TX"),
    ("Phoenix", "AZ"),
    ("Philadelphia", "PA"),
    ("San Antonio", "TX"),
    ("San Diego", "CA"),
    ("Dallas", "TX"),
    ("Austin", "TX"),
    ("Seattle", "WA"),
    ("Denver", "CO"),
    ("Boston", "MA"),
    ("Portland", "OR"),
    ("Atlanta", "GA"),
    ("Miami", "FL"),
    ("Minneapolis", "MN"),
    ("San Francisco", "CA"),
)
# Area codes for the generated numbers, all in the 555 exchange (reserved for fiction).
AREA_CODES = (
    "201 202 203 205 206 207 208 209 210 212 213 214 215 216 217 218 219 224 225 228 229 231 "
    "234 239 240 248 251 252 253 254 256 260 262 267 269 270 276 281 301 302 303 304 305 307 "
    "308 309 310 312 313 314 315 316 317 318 319 320 321 323 325 330 334 336 337 339 347 351 "
    "352 360 361 386 401 402 404 405 406 407 408 409 410 412 413 414 417 419 423 425 432 "
    "434 435 440 443 469 478 479 480 484 501 502 503 504 505 507 508 509 510 512 513 515 516"
).split()
PHONE_CAPACITY = len(AREA_CODES) * 10_000
TIERS = (("bronze", 50), ("silver", 30), ("gold", 15), ("platinum", 5))
TIER_POINTS = {"bronze": (0, 999), "silver": (1000, 4999), "gold": (5000, 14999)}
CHANNELS = (("email", 45), ("sms", 20), ("push", 20), ("web", 15))
CATEGORIES = ("running", "outdoor", "yoga", "cycling", "swimming", "training", "tennis")
PRODUCT_NAMES = {
    "running": ("Trail Runner 4", "Road Racer", "Tempo Shorts", "Reflective Vest", "Run Cap"),
    "outdoor": ("Summit Jacket", "Trek Boots", "Daypack 24L", "Fleece Hoodie", "Rain Shell"),
    "yoga": ("Studio Mat", "Flow Leggings", "Cork Block", "Wrap Top", "Strap Set"),
    "cycling": ("Aero Helmet", "Bib Shorts", "Bike Light Set", "Cycling Gloves", "Jersey"),
    "swimming": ("Lap Goggles", "Swim Cap", "Training Fins", "Kickboard", "Tech Suit"),
    "training": ("Kettlebell 12kg", "Trainer X", "Jump Rope", "Gym Bag", "Resistance Bands"),
    "tennis": ("Pro Racquet", "Court Shoes", "Ball Can", "Tennis Skirt", "Wristbands"),
}
CATALOG = [
    {
        "product_id": f"SKU-{10001 + c * 10 + n}",
        "name": name,
        "category": category,
        "price": round(19 + ((c * 7 + n * 13) % 20) * 9.5, 2),
    }
    for c, category in enumerate(CATEGORIES)
    for n, name in enumerate(PRODUCT_NAMES[category])
]


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _recommendations(rng: random.Random, favorite: str, count: int) -> list[dict[str, Any]]:
    liked = [p for p in CATALOG if p["category"] == favorite]
    others = [p for p in CATALOG if p["category"] != favorite]
    picks = rng.sample(liked, min(3, count)) + rng.sample(others, count - min(3, count))
    scores = sorted((round(rng.uniform(0.35, 0.99), 3) for _ in picks), reverse=True)
    return [
        {**product, "score": score, "url": f"https://shop.example.com/p/{product['product_id']}"}
        for product, score in zip(picks, scores, strict=True)
    ]


def demo_profile(number: int) -> dict[str, Any]:
    """Profile ``number`` of the data set (0-based), always the same."""
    rng = random.Random(f"enrich-demo-{number}")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, state = rng.choice(CITIES)
    tier = _weighted(rng, TIERS)
    low, high = TIER_POINTS.get(tier, (15000, 60000))
    orders = max(1, int(rng.expovariate(1 / {"bronze": 3, "silver": 8}.get(tier, 18))))
    average = round(rng.uniform(35, 180), 2)
    days_since = int(rng.expovariate(1 / 60))
    last_order = REFERENCE - timedelta(days=days_since, minutes=rng.randrange(24 * 60))
    favorite = rng.choice(CATEGORIES)
    opt_in = rng.random() < 0.7
    lifetime = round(orders * average, 2)
    joined = REFERENCE - timedelta(days=rng.randrange(30, 3650))
    identifiers: dict[str, str] = {
        "email": f"{first}.{last}.{number + 1}@example.com".lower(),
        "crm_id": f"CRM-{number + 1:07d}",
    }
    if number < PHONE_CAPACITY and rng.random() < 0.7:
        area = AREA_CODES[number // 10_000]
        identifiers["phone"] = f"+1{area}555{number % 10_000:04d}"
    if rng.random() < 0.6:
        identifiers["guest_ref"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    segments = [f"tier_{tier}", f"likes_{favorite}"]
    segments += ["high_value"] if lifetime >= 1500 else []
    segments += ["newsletter"] if opt_in else []
    segments += ["lapsed_90d"] if days_since > 90 else ["active_30d"] if days_since <= 30 else []
    segments += ["first_time_buyer"] if orders == 1 else []
    return {
        "identifiers": identifiers,
        "traits": {
            "first_name": first,
            "last_name": last,
            "tier": tier,
            "loyalty_points": rng.randint(low, high),
            "preferred_channel": _weighted(rng, CHANNELS),
            "city": city,
            "state": state,
            "country": "US",
            "language": "en",
            "marketing_opt_in": opt_in,
            "member_since": joined.date().isoformat(),
            "favorite_category": favorite,
        },
        "segments": segments,
        "metrics": {
            "lifetime_value": lifetime,
            "order_count": orders,
            "last_order_at": _stamp(last_order),
            "average_order_value": average,
            "visits_30d": rng.randint(0, 25),
            "churn_risk": round(min(0.99, days_since / 365 + rng.uniform(0, 0.2)), 2),
        },
        "recommendations": _recommendations(rng, favorite, rng.randint(5, 10)),
        "source": SOURCE,
    }


def demo_guest() -> dict[str, Any]:
    """The documented test guest: every field filled in, including ``last_event_at``."""
    return {
        "identifiers": {
            "email": DEMO_EMAIL,
            "guest_ref": "demo-guest",
            "crm_id": "CRM-DEMO",
            "phone": "+14155550100",
        },
        "traits": {
            "first_name": "Dana",
            "last_name": "Demo",
            "tier": "platinum",
            "loyalty_points": 48250,
            "preferred_channel": "email",
            "city": "San Francisco",
            "state": "CA",
            "country": "US",
            "language": "en",
            "marketing_opt_in": True,
            "member_since": "2019-04-12",
            "favorite_category": "running",
        },
        "segments": ["tier_platinum", "likes_running", "high_value", "newsletter", "active_30d"],
        "metrics": {
            "lifetime_value": 8421.75,
            "order_count": 42,
            "last_order_at": "2026-10-28T14:05:00Z",
            "last_event_at": "2026-10-31T09:30:00Z",
            "average_order_value": 200.52,
            "visits_30d": 17,
            "churn_risk": 0.04,
        },
        "recommendations": _recommendations(random.Random("enrich-demo-guest"), "running", 8),
        "source": SOURCE,
        "consent": _consent(personalization="granted", marketing="granted"),
    }


def optout_guest() -> dict[str, Any]:
    """The documented guest who denied marketing: found, but no personal data for a view
    (or client) with that purpose (``email_offer``)."""
    return {
        "identifiers": {"email": OPTOUT_EMAIL, "guest_ref": "demo-optout", "crm_id": "CRM-OPTOUT"},
        "traits": {"first_name": "Olli", "last_name": "Optout", "tier": "gold", "language": "en"},
        "segments": ["tier_gold", "likes_outdoor"],
        "metrics": {"lifetime_value": 912.4, "order_count": 7, "churn_risk": 0.2},
        "recommendations": _recommendations(random.Random("enrich-demo-optout"), "outdoor", 5),
        "source": SOURCE,
        "consent": _consent(personalization="granted", marketing="denied"),
    }


def _consent(**statuses: str) -> dict[str, Any]:
    """Decisions for the purposes the deployment has (ENRICH_CONSENT_PURPOSES), made once."""
    return {
        purpose: {"status": status, "at": "2026-10-01T12:00:00Z", "source": "demo_cmp"}
        for purpose, status in statuses.items()
        if purpose in consent_rules()
    }


# The demo's example view (`enrich views`): what a web-offer decision needs, flat, with
# defaults, so an unknown guest maps to the same outputs (`enrich demo` keeps it current).
DEMO_VIEW = "web_offer"
DEMO_VIEW_DEFINITION: dict[str, Any] = {
    "fields": [
        "traits.tier",
        "traits.first_name",
        "metrics.lifetime_value",
        "metrics.churn_risk",
        "segments",
    ],
    "rename": {
        "traits.tier": "tier",
        "traits.first_name": "first_name",
        "metrics.lifetime_value": "lifetime_value",
        "metrics.churn_risk": "churn_risk",
    },
    "defaults": {"traits.tier": "none", "metrics.lifetime_value": 0, "segments": ["anonymous"]},
}


# The same view for the consent purpose marketing: the opt-out guest gets its defaults.
DEMO_CONSENT_VIEW = "email_offer"
DEMO_CONSENT_VIEW_DEFINITION: dict[str, Any] = {**DEMO_VIEW_DEFINITION, "purpose": "marketing"}


def demo_documents(profiles: int) -> Iterator[dict[str, Any]]:
    """The test guest, the opt-out guest, then ``profiles`` generated profiles."""
    yield demo_guest()
    yield optout_guest()
    for number in range(profiles):
        yield demo_profile(number)


async def load_demo(session: AsyncSession, settings: Settings, profiles: int) -> int:
    """Upsert the demo data set (deterministic); returns how many profiles it holds."""
    region = settings.default_phone_region
    batch: list[tuple[int, PreparedProfile | str]] = []
    total = 0
    for index, document in enumerate(demo_documents(profiles)):
        batch.append((index, prepare_raw(document, region)))
        if len(batch) >= BATCH:
            total += await _load(session, batch)
            batch = []
    if batch:
        total += await _load(session, batch)
    return total


async def _load(session: AsyncSession, batch: list[tuple[int, PreparedProfile | str]]) -> int:
    result = await upsert_prepared(session, batch)
    if result.failed:  # generated data always loads; anything else is a bug worth stopping on
        failure = next(o for o in result.results if o.status == "failed")
        raise RuntimeError(f"demo record {failure.index} failed: {failure.error}")
    return len(batch)


async def ensure_demo_client(
    session: AsyncSession, saved: dict[str, str] | None, name: str, scopes: str
) -> dict[str, str]:
    """Reuse the saved demo client while its secret still works; otherwise make a new one."""
    if saved:
        client = await ClientRepository(session).get(saved.get("client_id", ""))
        if (
            client is not None
            and not client.disabled
            and verify_secret(saved.get("client_secret", ""), client.secret_hash)
        ):
            return {"client_id": client.client_id, "client_secret": saved["client_secret"]}
    client, secret = await ClientService(session).create(name, scopes)
    return {"client_id": client.client_id, "client_secret": secret}
