"""Service settings: every knob is an ``ENRICH_*`` environment variable (or a line in ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from fastapi import Depends
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.addresses import parse_networks
from app.core.parts import part
from app.core.purposes import DEFAULT_PURPOSES, Rules, parse_purposes

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/enrich.db"


class Settings(BaseSettings):
    """One settings object for the API, the CLI and the migrations."""

    model_config = SettingsConfigDict(
        env_prefix="ENRICH_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the service runs and how it names itself.
    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    public_url: str = "http://127.0.0.1:8000"

    # Storage. The defaults are the embedded mode: an SQLite file and an in-process cache.
    database_url: str = DEFAULT_SQLITE_URL
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=2.0, gt=0)
    db_statement_timeout_ms: int = Field(default=2000, ge=0)
    # PostgreSQL read replicas (streaming): enrich misses and profile reads go to one that has
    # replayed the writes they depend on, else to the primary (docs/deployment.md#read-replicas).
    database_replica_urls: str = ""  # space- or comma-separated
    database_replica_max_lag_seconds: float = Field(default=5.0, gt=0, le=3600)
    database_replica_probe_seconds: float = Field(default=0.25, gt=0, le=10)
    database_replica_pool_size: int = Field(default=5, ge=1)
    # How many recent writes each process remembers the commit position of (about 200 bytes
    # each); older writes share one floor, which only sends more reads to the primary.
    database_replica_marks: int = Field(default=65_536, ge=16, le=10_000_000)
    # Through PgBouncer in transaction pooling mode: no statement cache, unique statement
    # names, no startup parameters PgBouncer refuses (docs/deployment.md#pgbouncer).
    database_pgbouncer: bool = False
    redis_url: SecretStr | None = None
    redis_prefix: str = "enrich:"
    redis_connect_timeout: float = Field(default=0.1, gt=0)
    redis_socket_timeout: float = Field(default=0.1, gt=0)
    # Redis Cluster: ENRICH_REDIS_URL is then one seed node (its credentials and TLS apply to
    # every node), ENRICH_REDIS_CLUSTER_SEEDS more of them ("host:port,host:port").
    redis_cluster: bool = False
    redis_cluster_seeds: str = ""

    # OAuth 2.0 and tokens.
    issuer: str | None = None
    audience: str = "enrich"
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    signing_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    key_refresh_seconds: float = Field(default=5.0, gt=0)
    revocation_poll_seconds: float = Field(default=0.25, gt=0, le=1.0)
    token_cache_max_bytes: int = Field(default=64 * 1_048_576, ge=1_048_576)
    # The header that carries an API key (`enrich clients api-key`), and the most bytes of
    # verified keys one worker remembers (~600 bytes a key).
    api_key_header: str = Field(default="X-API-Key", pattern=r"^[A-Za-z0-9-]{1,64}$")
    api_key_cache_max_bytes: int = Field(default=4 * 1_048_576, ge=65_536)
    # The most bytes of compiled views (`enrich views`) one worker keeps: each name's latest
    # version first, then older live versions; one past it answers 503 (~2-6 KB a view).
    views_max_bytes: int = Field(default=16 * 1_048_576, ge=65_536)
    # Event retention: events received longer ago than this are deleted in small batches every
    # interval by the running service (0: kept for ever; `enrich purge` does it by hand).
    events_retention_days: float = Field(default=0, ge=0, le=36_500)
    events_purge_interval_seconds: float = Field(default=3600.0, ge=1)
    # Consent purposes and their rule (app/core/purposes.py): purpose:opt-in|opt-out, ...
    consent_purposes: str = DEFAULT_PURPOSES
    auth_max_failures_per_client: int = Field(default=10, ge=1)
    auth_max_failures_per_address: int = Field(default=50, ge=1)
    auth_failure_window_seconds: int = Field(default=60, ge=1)

    # The enrich cache: L1 in each process, L2 in Redis (when configured).
    cache_enabled: bool = True
    cache_l1_max_entries: int = Field(default=100_000, ge=0)
    cache_l1_max_bytes: int = Field(default=256 * 1_048_576, ge=0)
    cache_l1_ttl_seconds: float = Field(default=30.0, gt=0)
    cache_l2_ttl_seconds: float = Field(default=300.0, gt=0)
    cache_negative_ttl_seconds: float = Field(default=30.0, gt=0)
    cache_stale_seconds: float = Field(default=86_400.0, ge=0)
    cache_ttl_jitter: float = Field(default=0.1, ge=0, le=0.5)
    cache_invalidation_ack_ms: int = Field(default=200, ge=0, le=5000)
    redis_breaker_failures: int = Field(default=3, ge=1)
    redis_breaker_reset_seconds: float = Field(default=2.0, gt=0)
    deadline_ms: int = Field(default=250, ge=10, le=10_000)

    # Request handling.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    bulk_max_body_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    bulk_max_records: int = Field(default=10_000, ge=1)
    answer_max_chars: int = Field(default=8000, ge=500)
    # How far ahead of this server's clock an event's occurred_at may be (more: 422).
    event_max_clock_skew_seconds: float = Field(default=300.0, ge=0, le=86_400)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    max_header_fields: int = Field(default=100, ge=10, le=10_000)
    max_url_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    # A written document (profile, patch, bulk or import record, event): levels of nesting
    # (the document is the first; orjson and pydantic cannot serialize past about 250) and
    # characters of text (strings and member names together).
    document_max_depth: int = Field(default=32, ge=2, le=200)
    document_max_chars: int = Field(default=1_000_000, ge=1000)
    default_phone_region: str = "US"
    log_level: str = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"

    # Operations: access log, metrics, per-client limits, proxies, shutdown.
    access_log: bool = True
    metrics_enabled: bool = True
    metrics_allow_networks: str = "127.0.0.1/32 ::1/128"
    trusted_proxies: str = ""
    # The header in which a trusted proxy that terminates TLS forwards the caller's client
    # certificate (e.g. Client-Cert, RFC 9440); empty: none is read (app/core/certs.py).
    client_cert_header: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9-]*$")
    # The CAs (a PEM bundle) that the certificates of clients with tls_client_auth must chain
    # to (app/auth/certauth.py); `enrich serve --ssl-ca-certs` sets it when it is unset.
    client_ca_certs: str = ""
    rate_limit_enabled: bool = True
    rate_limit_rps: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    shutdown_drain_seconds: float = Field(default=5.0, ge=0, le=300)
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0, le=600)
    # Who may read /docs, /redoc and /openapi.json (see docs_access).
    docs: Literal["auto", "public", "admin", "off"] = "auto"

    # The Interactive Experience relay (POST /v1/experiences/call): Personalize's regional API
    # base URL (empty: every call gets the fallback, not_configured), its deadline, the guest's
    # fields it sends by default (enrich's `fields` grammar) and the longest `params` it sends,
    # in characters.
    personalize_api_url: str = ""
    personalize_timeout_ms: int = Field(default=800, ge=50, le=10_000)
    experience_fields: str = "traits,segments,metrics"
    experience_params_max_chars: int = Field(default=4000, ge=1000, le=100_000)

    # OpenTelemetry tracing (off: nothing is built, no request pays for it;
    # docs/operations.md#tracing). The OTLP/HTTP traces URL (empty: OTEL_EXPORTER_OTLP_*
    # variables, else http://localhost:4318/v1/traces), the share of traces started here that
    # are sampled (a caller's traceparent decides for its own), and the resource's service.name
    # and extra attributes ("key=value,key=value", as OTEL_RESOURCE_ATTRIBUTES).
    tracing_enabled: bool = False
    tracing_endpoint: str = ""
    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    tracing_service_name: str = Field(default="enrich", min_length=1, max_length=255)
    tracing_resource_attributes: str = ""

    # Where the migrations live (found automatically when unset).
    migrations_dir: str | None = None

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept the usual URL spellings and pick the async driver for them."""
        for plain, driver in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @field_validator("database_replica_urls")
    @classmethod
    def _replica_drivers(cls, value: str) -> str:
        """Each replica URL with the async driver, like ``database_url``."""
        urls = value.replace(",", " ").split()
        for url in urls:
            if not url.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
                raise ValueError("each replica URL must be a PostgreSQL URL")
        return " ".join(cls._async_driver(url) for url in urls)

    @field_validator("metrics_allow_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        """Check each address range now, so a typo stops the start rather than a request."""
        parse_networks(value)
        return " ".join(value.replace(",", " ").split())

    @field_validator("personalize_api_url")
    @classmethod
    def _api_base(cls, value: str) -> str:
        """An http(s) base URL without a path's trailing slash, or empty (the relay is off)."""
        value = value.strip().rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local stand-in)")
        return value

    @field_validator("tracing_endpoint")
    @classmethod
    def _traces_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL (OTLP over HTTP: .../v1/traces)")
        return value

    @field_validator("tracing_resource_attributes")
    @classmethod
    def _resource_pairs(cls, value: str) -> str:
        """Check the pairs now, so a typo stops the start (``resource_attributes`` reads them)."""
        for pair in filter(None, (p.strip() for p in value.split(","))):
            key, equals, _ = pair.partition("=")
            if not equals or not key.strip():
                raise ValueError(f"a resource attribute is key=value, not {pair!r}")
        return value

    @property
    def resource_attributes(self) -> dict[str, str]:
        """ENRICH_TRACING_RESOURCE_ATTRIBUTES as a dict."""
        pairs = filter(None, (p.strip() for p in self.tracing_resource_attributes.split(",")))
        return {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in pairs)}

    @field_validator("consent_purposes")
    @classmethod
    def _purposes(cls, value: str) -> str:
        parse_purposes(value)
        return value

    @property
    def consent_rules(self) -> Rules:
        """ENRICH_CONSENT_PURPOSES as purpose -> opt-in."""
        return parse_purposes(self.consent_purposes)

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @property
    def token_issuer(self) -> str:
        return (self.issuer or self.public_url).rstrip("/")

    @property
    def docs_access(self) -> Literal["public", "admin", "off"]:
        """ENRICH_DOCS, with ``auto`` resolved: off in production, public elsewhere."""
        if self.docs == "auto":
            return "off" if self.environment == "production" else "public"
        return self.docs

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @field_validator("redis_cluster_seeds")
    @classmethod
    def _check_seeds(cls, value: str) -> str:
        for seed in filter(None, (s.strip() for s in value.split(","))):
            host, _, port = seed.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"a cluster seed is host:port, not {seed!r}")
        return value

    @property
    def cluster_seeds(self) -> list[tuple[str, int]]:
        """ENRICH_REDIS_CLUSTER_SEEDS as (host, port) pairs."""
        seeds = filter(None, (s.strip() for s in self.redis_cluster_seeds.split(",")))
        return [(h.strip("[]"), int(p)) for h, _, p in (s.rpartition(":") for s in seeds)]

    @property
    def replica_urls(self) -> list[str]:
        """The replica URLs (none when the database is SQLite)."""
        return [] if self.is_sqlite else self.database_replica_urls.split()

    @property
    def redis_dsn(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None


@lru_cache
def get_settings() -> Settings:
    return Settings()


SettingsDep = Annotated[Settings, Depends(part(Settings))]
