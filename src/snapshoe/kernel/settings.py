"""Typed settings, read from the environment (prefix ``SNAPSHOE_``).

Defaults work on a fresh development machine: MariaDB root@127.0.0.1:3306 with no password,
Redis and RabbitMQ on their standard ports, the mail sink on 1025. ``namespace`` keeps a test
run apart from a running dev platform: it prefixes database names, Redis keys and RabbitMQ
exchanges, so both can share one MariaDB/Redis/RabbitMQ.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES: tuple[str, ...] = ("users", "products", "orders", "payments")
"""Services that own a database. The sandbox PG and mail sink own nothing persistent."""

ServiceName = Literal["users", "products", "orders", "payments", "sandbox_pg", "mail_sink"]
_URL_SERVICES = frozenset(("users", "products", "orders", "payments", "sandbox_pg", "mail_sink"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPSHOE_", extra="ignore")

    namespace: str = Field(default="snapshoe", pattern=r"^[a-z][a-z0-9_]{0,30}$")
    host: str = "127.0.0.1"

    # MariaDB / MySQL
    db_host: str = "127.0.0.1"
    db_port: int = 3306
    db_user: str = "root"
    db_password: str = ""
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_echo: bool = False

    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    mail_from: str = "SnapShoe <no-reply@snapshoe.local>"

    # Ports. The gateway is the only public one; the rest are internal.
    gateway_port: int = 8000
    users_port: int = 8101
    products_port: int = 8102
    orders_port: int = 8103
    payments_port: int = 8104
    sandbox_pg_port: int = 8105
    mail_sink_smtp_port: int = 1025
    mail_sink_http_port: int = 8025
    gateway_stats_port: int = 8404

    # Where other processes reach a service when that is not ``host``:port, e.g. in containers,
    # which bind the wildcard address but call each other by DNS name
    # (SNAPSHOE_ORDERS_URL=http://orders:8103). Empty: http://host:port.
    users_url: str = ""
    products_url: str = ""
    orders_url: str = ""
    payments_url: str = ""
    sandbox_pg_url: str = ""
    mail_sink_url: str = ""

    # Shared secret of service-to-service calls (header ``X-Internal-Token``) on ``/internal/...``
    # routes, which the gateway never routes. The default is for development only: set
    # SNAPSHOE_INTERNAL_TOKEN in any shared deployment.
    internal_token: str = Field(default="snapshoe-dev-internal-token", min_length=16)

    # Worker processes per HTTP service (uvicorn --workers). 0 = one per core: the drop
    # benchmark measured 1,000 -> 1,400 sold-out refusals/s going from 1 to 2 on 2 cores.
    http_workers: int = Field(default=0, ge=0, le=64)

    # Where dev keys, rendered configs and runtime files live.
    data_dir: Path = Path(".snapshoe")

    # JWT (RFC 8725: one pinned asymmetric algorithm, short-lived access tokens).
    jwt_algorithm: Literal["ES256"] = "ES256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "https://auth.snapshoe.local"
    jwt_audience: str = "snapshoe-api"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=900)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    jwt_leeway_seconds: int = Field(default=0, ge=0, le=60)

    # Email verification
    verification_code_ttl_seconds: int = 600
    verification_max_attempts: int = 5
    verification_resend_interval_seconds: int = 60
    # The users service's own limits (docs/security.md), kept in Redis with TTLs, so they hold
    # whatever the gateway lets through. Wrong passwords per account and client address, and
    # per account from anywhere (unknown addresses alike), within a fixed window.
    login_failures_per_address: int = Field(default=5, ge=1)
    login_failures_per_account: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Verification code tries per client address per day (any addresses tried).
    verification_tries_per_address_per_day: int = Field(default=100, ge=1)
    # Sign-up and resend mails per target address per hour (beside the one-a-minute interval).
    mails_per_address_per_hour: int = Field(default=5, ge=1)
    # Account mail queue (users worker): how long an unsent mail waits before it is retried.
    mail_retry_seconds: float = Field(default=5.0, gt=0)

    # Gateway rate limits (per client IP)
    login_rate_per_minute: int = 20
    verification_rate_per_minute: int = 20

    # Orders
    order_stage_seconds: float = 24 * 3600
    order_payment_ttl_seconds: float = 600
    # How long orders turns a sold-out item away without asking products again (0 = always ask).
    sold_out_hint_seconds: float = Field(default=0.5, ge=0, le=10)
    # Reservations one orders process has in flight at products at once; the rest of a
    # stampede waits in orders (cheap) and is re-checked against the sold-out hint when its
    # turn comes, instead of piling onto products until its answers time out.
    reserve_concurrency: int = Field(default=64, ge=1, le=1000)
    # Ledger transactions one products process has open at once. Each writes every admitted
    # reservation queued since the last one (group commit); sold-out refusals (the gate alone)
    # never wait for them.
    ledger_write_concurrency: int = Field(default=2, ge=1, le=64)
    # Transactions one orders process has open at once to write new orders, each with every
    # order placed since its last (group commit).
    order_write_concurrency: int = Field(default=2, ge=1, le=64)

    # Payments / PG
    pg_base_url: str = ""  # empty: the local sandbox PG
    pg_secret_key: str = "test_sk_snapshoe_sandbox"  # noqa: S105 (sandbox-only default)
    pg_timeout_seconds: float = 5.0

    log_level: str = "INFO"
    log_json: bool = True
    # Per-request log lines of the services: "problems" (5xx and requests of 1 s or more) or
    # "all". The gateway logs every request with the same request id either way, and every
    # request is counted in the services' /metrics.
    access_log: Literal["all", "problems"] = "problems"

    def database_name(self, service: str) -> str:
        return f"{self.namespace}_{service}"

    def database_url(self, service: str) -> str:
        pw = f":{self.db_password}" if self.db_password else ""
        return (
            f"mysql+asyncmy://{self.db_user}{pw}@{self.db_host}:{self.db_port}/"
            f"{self.database_name(service)}?charset=utf8mb4"
        )

    def server_url(self) -> str:
        """The server without a database, for CREATE DATABASE."""
        pw = f":{self.db_password}" if self.db_password else ""
        return f"mysql+asyncmy://{self.db_user}{pw}@{self.db_host}:{self.db_port}/?charset=utf8mb4"

    def service_port(self, service: str) -> int:
        """The HTTP port of a service (the mail sink's is its HTTP API)."""
        attr = "mail_sink_http_port" if service == "mail_sink" else f"{service}_port"
        port = getattr(self, attr, None)
        if not isinstance(port, int):
            raise KeyError(service)
        return port

    @property
    def reach_host(self) -> str:
        """``host`` as a client dials it: a wildcard bind address means this machine."""
        if self.host in ("", "0.0.0.0"):  # noqa: S104 (compared, not bound)
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return self.host

    def service_url(self, service: str) -> str:
        """The base URL to call a service at: its ``<service>_url`` setting, else host:port."""
        override = getattr(self, f"{service}_url", "") if service in _URL_SERVICES else ""
        if override:
            return str(override).rstrip("/")
        return f"http://{self.reach_host}:{self.service_port(service)}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.reach_host}:{self.gateway_port}"

    @property
    def effective_pg_base_url(self) -> str:
        return self.pg_base_url or self.service_url("sandbox_pg")

    @cached_property
    def private_key_path(self) -> Path:
        return self.jwt_private_key_file or self.data_dir / "keys" / "jwt-private.pem"

    @cached_property
    def public_key_path(self) -> Path:
        return self.jwt_public_key_file or self.data_dir / "keys" / "jwt-public.pem"


def get_settings() -> Settings:
    """Read settings now. Called by bootstrap code, never at import time."""
    return Settings()
