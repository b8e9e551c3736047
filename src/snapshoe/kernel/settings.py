"""Typed settings, read from the environment (prefix ``SNAPSHOE_``): the shared ones.

Here are the knobs more than one part reads (where the databases, Redis and RabbitMQ are, the
ports and addresses of every part, the JWT keys, the events, the logs). A service's own knobs
are in its ``settings.py`` (``OrdersSettings`` and so on), a subclass of ``Settings`` read from
the same ``SNAPSHOE_`` names; ``settings_for`` builds one.

Defaults work on a fresh development machine: MariaDB root@127.0.0.1:3306 with no password,
Redis and RabbitMQ on their standard ports, the mail sink on 1025. ``namespace`` keeps a test
run apart from a running dev platform: it prefixes database names, Redis keys and RabbitMQ
exchanges, so both can share one MariaDB/Redis/RabbitMQ.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import unquote

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES: tuple[str, ...] = ("users", "products", "orders", "payments")
"""Services that own a database. The sandbox PG and mail sink own nothing persistent."""

ServiceName = Literal["users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "web"]
Environment = Literal["dev", "test", "production"]
_URL_SERVICES = frozenset(
    ("users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "web")
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPSHOE_", extra="ignore")

    # dev and test accept the public dev defaults below (secrets, generated JWT keys);
    # anything else is production: start-up refuses them (check_start_secrets).
    environment: Environment = "dev"
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
    products_streams_port: int = 8106
    # The store and the operator console (snapshoe.web), behind the gateway at / and /admin.
    web_port: int = 8107
    mail_sink_smtp_port: int = 1025
    mail_sink_http_port: int = 8025
    gateway_stats_port: int = 8404
    # A worker's own /metrics port (0: none). Under `snapshoe up` a worker writes to its
    # service's multiprocess metrics directory instead (kernel.metrics); in a container of its
    # own it serves here. SNAPSHOE_METRICS_DIR: where the multiprocess directories are.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_dir: str = ""

    # Where other processes reach a service when that is not ``host``:port, e.g. in containers,
    # which bind the wildcard address but call each other by DNS name
    # (SNAPSHOE_ORDERS_URL=http://orders:8103). Empty: http://host:port.
    users_url: str = ""
    products_url: str = ""
    orders_url: str = ""
    payments_url: str = ""
    sandbox_pg_url: str = ""
    mail_sink_url: str = ""
    web_url: str = ""

    # Shared secret of service-to-service calls (header ``X-Internal-Token``) on ``/internal/...``
    # routes, which the gateway never routes. The default is for development only: set
    # SNAPSHOE_INTERNAL_TOKEN in any shared deployment.
    internal_token: str = Field(default="snapshoe-dev-internal-token", min_length=16)

    # Worker processes per HTTP service (uvicorn --workers). 0 = one per core: the drop
    # benchmark measured 1,000 -> 1,400 sold-out refusals/s going from 1 to 2 on 2 cores.
    http_workers: int = Field(default=0, ge=0, le=64)
    # Processes of products that serve only the waiting room's event streams, on
    # products_streams_port, which the gateway's stream backend then reaches (`snapshoe up`).
    # 0 (the default): the products processes serve them along with everything else. A crowd
    # of 16,000 streams in the processes that also run the reserve path slowed it past its
    # timeouts in bench queue (docs/waiting-room.md); apart, their stalls stay theirs.
    products_stream_workers: int = Field(default=0, ge=0, le=16)

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

    # The benchmark's baselines (issue 13): the floor route (GET /api/orders/-/floor) and
    # products sold with row locks (stock_mode db_lock) exist only when this is on. Off, neither
    # is reachable: buyers never see benchmark code. `snapshoe bench drop --compare` needs it.
    bench_baselines: bool = False

    # The secret key of the payment gateway: payments signs its PG calls with it and the sandbox
    # PG checks them, so both read it here (payments' other PG knobs are in payments/settings.py).
    pg_secret_key: str = "test_sk_snapshoe_sandbox"  # noqa: S105 (sandbox-only default)

    # Events (kernel.messaging). A consumer retries a transient backend error (database,
    # Redis, network) in-process, holding the message, with capped jittered exponential
    # backoff: such retries never spend the queue's delivery limit. After ``hold`` seconds the
    # message is put back at the end of its queue (re-published, then acked) and tried again.
    event_retry_base_seconds: float = Field(default=0.2, gt=0, le=60)
    event_retry_max_seconds: float = Field(default=5.0, gt=0, le=600)
    event_retry_hold_seconds: float = Field(default=300.0, gt=0, le=1500)
    # An event no queue is bound to stays unpublished; the relay tries it again after this.
    event_unroutable_retry_seconds: float = Field(default=60.0, gt=0, le=86400)
    # Published outbox rows and processed inbox rows older than this are deleted.
    event_retention_days: float = Field(default=7.0, gt=0, le=3650)

    # How long `snapshoe up` waits for every process to be ready before it gives up, naming the
    # slow one with its last log lines. Each process imports for seconds of CPU, and up starts
    # about 18 of them: on a busy 2-core machine 60 s was not enough.
    startup_timeout_seconds: float = Field(default=180, gt=0, le=3600)

    log_level: str = "INFO"
    log_json: bool = True
    # Per-request log lines of the services: "problems" (5xx and requests of 1 s or more) or
    # "all". The gateway logs every request with the same request id either way, and every
    # request is counted in the services' /metrics.
    access_log: Literal["all", "problems"] = "problems"
    # Tracing export (OTLP over HTTP, e.g. http://127.0.0.1:4318): empty, the default, records
    # no spans (logs still carry the gateway's trace id). The ratio samples by trace id.
    otlp_endpoint: str = ""
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

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

    @cached_property
    def private_key_path(self) -> Path:
        return self.jwt_private_key_file or self.data_dir / "keys" / "jwt-private.pem"

    @cached_property
    def public_key_path(self) -> Path:
        return self.jwt_public_key_file or self.data_dir / "keys" / "jwt-public.pem"


# Values anyone can read in this repository (settings defaults, compose and the k8s dev
# overlay): fine on a laptop, an open door anywhere else.
PUBLIC_DEV_SECRETS = frozenset(
    (
        "",
        "snapshoe-dev-internal-token",
        "test_sk_snapshoe_sandbox",
        "snapshoe-dev-db",
        "snapshoe-dev-mq",
        "guest",
    )
)

_HTTP_SERVICES = frozenset(SERVICES)
_PG_KEY_ROLES = frozenset(("payments", "payments-worker", "sandbox_pg", "up"))
_NO_INTERNAL_TOKEN = frozenset(("mail_sink", "migrate"))


class UnsafeSecretsError(RuntimeError):
    """Start-up outside dev/test with a missing or public default secret."""

    def __init__(self, role: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{role}: refusing to start with SNAPSHOE_ENVIRONMENT=production and unsafe "
            f"secrets:\n{lines}\n(the image's entrypoint also reads SNAPSHOE_<NAME>_FILE; "
            "SNAPSHOE_ENVIRONMENT=dev accepts the dev defaults, on a developer's machine only)"
        )


def _amqp_password(url: str) -> str:
    m = re.match(r"^[a-z]+://(?:[^:@/]*)(?::([^@/]*))?@", url)
    return unquote(m.group(1) or "") if m else ""


def secret_problems(settings: Settings, role: str) -> list[str]:
    """What ``role`` (a service, ``<service>-worker``, ``migrate`` or ``up``) would run with
    that is missing or publicly known, one line per variable; empty in dev and test, where
    the public defaults are the point."""
    if settings.environment in ("dev", "test"):
        return []
    service = role.removesuffix("-worker")
    problems: list[str] = []
    random_hint = "to a random value, e.g. $(openssl rand -base64 32)"
    if role not in _NO_INTERNAL_TOKEN and settings.internal_token in PUBLIC_DEV_SECRETS:
        problems.append(f"SNAPSHOE_INTERNAL_TOKEN is the public dev default: set it {random_hint}")
    if role in _PG_KEY_ROLES and settings.pg_secret_key in PUBLIC_DEV_SECRETS:
        problems.append(
            "SNAPSHOE_PG_SECRET_KEY is missing or the public sandbox default: set it to the "
            "secret key your payment gateway issued"
        )
    if service in _HTTP_SERVICES or role in ("migrate", "up"):
        if settings.db_password in PUBLIC_DEV_SECRETS:
            problems.append(
                "SNAPSHOE_DB_PASSWORD is empty or a public dev value: set the database "
                "user's password"
            )
        if _amqp_password(settings.amqp_url) in PUBLIC_DEV_SECRETS:
            problems.append(
                "SNAPSHOE_AMQP_URL has no password or a public one (guest, snapshoe-dev-mq): "
                "set it to amqp://USER:PASSWORD@HOST:5672/"
            )
    # JWT keys generated into the data dir are dev keys: production is given its own.
    if role in (*SERVICES, "up") and settings.jwt_public_key_file is None:
        problems.append(
            "SNAPSHOE_JWT_PUBLIC_KEY_FILE is not set: give the path of the ES256 public key "
            "(PEM); generated dev keys are refused"
        )
    if role in ("users", "up") and settings.jwt_private_key_file is None:
        problems.append(
            "SNAPSHOE_JWT_PRIVATE_KEY_FILE is not set: give the path of the ES256 private key "
            "(PKCS#8 PEM); generated dev keys are refused"
        )
    return problems


def check_start_secrets(settings: Settings, role: str) -> None:
    """Raise UnsafeSecretsError if ``role`` must not start with these settings."""
    problems = secret_problems(settings, role)
    if problems:
        raise UnsafeSecretsError(role, problems)


SettingsT = TypeVar("SettingsT", bound=Settings)


def settings_for(cls: type[SettingsT], settings: Settings | None = None) -> SettingsT:
    """A service's settings: ``settings`` if it is one already; otherwise read now, keeping
    any shared values given (a test's ports and namespace) and reading the service's own knobs
    from the environment."""
    if isinstance(settings, cls):
        return settings
    if settings is None:
        return cls()
    return cls(**settings.model_dump())


def get_settings() -> Settings:
    """Read settings now. Called by bootstrap code, never at import time."""
    return Settings()
