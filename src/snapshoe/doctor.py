"""Checks every dependency and says exactly what is missing and how to start it."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass

import aio_pika
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from snapshoe.kernel.settings import Settings, secret_problems

START_HINTS = {
    "mariadb": (
        "start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
    ),
    "redis": (
        "start it: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
    "rabbitmq": (
        "start it: rabbitmq-server -detached  (ready after ~10 s: rabbitmqctl await_startup)"
    ),
    "haproxy": "install it: apt-get install -y haproxy  (2.6 or newer, for jwt_verify)",
    "secrets": "set them (docs/deployment.md), or SNAPSHOE_ENVIRONMENT=dev on a dev machine",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        hint = "" if self.ok else f"\n       -> {START_HINTS.get(self.name, '')}"
        return f"  [{mark}] {self.name:<9} {self.detail}{hint}"


async def _mariadb(settings: Settings) -> Check:
    where = f"{settings.db_user}@{settings.db_host}:{settings.db_port}"
    engine = create_async_engine(
        settings.server_url(), pool_size=1, connect_args={"connect_timeout": 3}
    )
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT VERSION()"))).scalar_one()
            limit = (await conn.execute(text("SELECT @@max_connections"))).scalar_one()
        note = ""
        if int(limit) < 500:
            note = (
                f"; max_connections={limit} is low for a drop: "
                "SET GLOBAL max_connections = 1000 (scripts/ensure-services does)"
            )
        return Check("mariadb", True, f"{where} ({version}){note}")
    except Exception as exc:
        return Check("mariadb", False, f"cannot connect to {where}: {_short(exc)}")
    finally:
        await engine.dispose()


async def _redis(settings: Settings) -> Check:
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
        info = await client.info("server")
        return Check(
            "redis", True, f"{_safe_url(settings.redis_url)} (v{info.get('redis_version')})"
        )
    except Exception as exc:
        return Check("redis", False, f"cannot reach {_safe_url(settings.redis_url)}: {_short(exc)}")
    finally:
        await client.aclose()


async def _rabbitmq(settings: Settings) -> Check:
    try:
        conn = await asyncio.wait_for(aio_pika.connect(settings.amqp_url, timeout=3), 5)
        await conn.close()
        return Check("rabbitmq", True, _safe_url(settings.amqp_url))
    except Exception as exc:
        return Check(
            "rabbitmq", False, f"cannot reach {_safe_url(settings.amqp_url)}: {_short(exc)}"
        )


def _haproxy() -> Check:
    path = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if shutil.which("/usr/sbin/haproxy") else None
    )
    if not path:
        return Check("haproxy", False, "not installed")
    out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout  # noqa: S603
    m = re.search(r"version (\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < (2, 6):
        return Check("haproxy", False, f"{path}: version 2.6+ needed, found {out.splitlines()[:1]}")
    return Check("haproxy", True, f"{path} ({m[0]})")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def busy_ports(settings: Settings) -> list[tuple[str, int]]:
    ports = {
        "gateway": settings.gateway_port,
        "users": settings.users_port,
        "products": settings.products_port,
        "orders": settings.orders_port,
        "payments": settings.payments_port,
        "sandbox_pg": settings.sandbox_pg_port,
        "web": settings.web_port,
        "mail_sink_smtp": settings.mail_sink_smtp_port,
        "mail_sink_http": settings.mail_sink_http_port,
    }
    return [(name, port) for name, port in ports.items() if port_in_use(settings.host, port)]


def _secrets(settings: Settings) -> Check:
    """What `snapshoe up` (which runs every process) would refuse outside dev and test."""
    problems = secret_problems(settings, "up")
    if settings.environment != "production":
        return Check("secrets", True, f"environment {settings.environment}: dev defaults accepted")
    if problems:
        return Check("secrets", False, "environment production: " + "; ".join(problems))
    return Check("secrets", True, "environment production: every secret given")


async def run_checks(settings: Settings) -> list[Check]:
    results = await asyncio.gather(_mariadb(settings), _redis(settings), _rabbitmq(settings))
    return [*results, _haproxy(), _secrets(settings)]


def _short(exc: BaseException) -> str:
    text_ = str(exc) or type(exc).__name__
    return text_.splitlines()[0][:160]


def _safe_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
