"""The real platform for tests: ``snapshoe up`` run as a subprocess in a test namespace.

The test namespace keeps the run apart from a developer's ``snapshoe up`` on the same machine:
its own databases (``snapshoe_test_*``), Redis db 15, its own ports and data dir.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from snapshoe.kernel.settings import Settings
from tests.support.net import fresh_address
from tests.support.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[2]
_LOCKS: list[Any] = []


def _claim_slot() -> int:
    """Several test runs may share this machine (other checkouts, CI, developers working in
    parallel): each claims a slot with its own ports, namespace, Redis db and data dir, held
    by a machine-wide file lock for the life of the process, and skips a slot whose ports
    something else holds. ``SNAPSHOE_TEST_SLOT`` forces one."""
    locks = Path(tempfile.gettempdir()) / "snapshoe-test-slots"
    locks.mkdir(parents=True, exist_ok=True)
    forced = os.environ.get("SNAPSHOE_TEST_SLOT")
    for slot in [int(forced)] if forced else range(7):
        handle = (locks / f"slot-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        if not forced and _port_busy(18000 + slot * 1000):
            handle.close()
            continue
        _LOCKS.append(handle)
        return slot
    raise RuntimeError("all 7 test slots are in use by other test runs")


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


SLOT = _claim_slot()
_OFF = SLOT * 1000
DATA_DIR = ROOT / ".snapshoe" / ("test" if SLOT == 0 else f"test-{SLOT}")

TEST_ENV = {
    # test accepts the public dev secrets, as dev does (issue 12, item 7), and the gateway
    # routes the sandbox PG's buyer-side endpoints, as in dev.
    "SNAPSHOE_ENVIRONMENT": "test",
    # The drop bench's tests compare with the baselines (its own test turns them off).
    "SNAPSHOE_BENCH_BASELINES": "true",
    "SNAPSHOE_NAMESPACE": "snapshoe_test" if SLOT == 0 else f"snapshoe_test{SLOT}",
    "SNAPSHOE_GATEWAY_PORT": str(18000 + _OFF),
    "SNAPSHOE_USERS_PORT": str(18101 + _OFF),
    "SNAPSHOE_PRODUCTS_PORT": str(18102 + _OFF),
    "SNAPSHOE_ORDERS_PORT": str(18103 + _OFF),
    "SNAPSHOE_PAYMENTS_PORT": str(18104 + _OFF),
    "SNAPSHOE_SANDBOX_PG_PORT": str(18105 + _OFF),
    "SNAPSHOE_PRODUCTS_STREAMS_PORT": str(18106 + _OFF),
    "SNAPSHOE_WEB_PORT": str(18107 + _OFF),
    "SNAPSHOE_MAIL_SINK_SMTP_PORT": str(11025 + _OFF),
    "SNAPSHOE_SMTP_PORT": str(11025 + _OFF),
    "SNAPSHOE_MAIL_SINK_HTTP_PORT": str(18025 + _OFF),
    "SNAPSHOE_GATEWAY_STATS_PORT": str(18404 + _OFF),
    "SNAPSHOE_REDIS_URL": f"redis://127.0.0.1:6379/{15 - SLOT}",
    "SNAPSHOE_DATA_DIR": str(DATA_DIR),
    # The browser tests (tests/web) all sign in from 127.0.0.1 through the store, which names
    # that address to the gateway: a dozen logins a minute is their normal. The limit's own
    # tests run their own HAProxy with a small one.
    "SNAPSHOE_LOGIN_RATE_PER_MINUTE": "300",
    "SNAPSHOE_VERIFICATION_RATE_PER_MINUTE": "30",
    "SNAPSHOE_SIGNUP_RATE_PER_MINUTE": "30",
    # The reset tests make a dozen requests from one client; the gateway's own test of this
    # limit runs its own HAProxy with a small one.
    "SNAPSHOE_PASSWORD_RESET_RATE_PER_MINUTE": "60",
    # The waiting-room tests queue hundreds of buyers from one client; the limit's own test
    # runs the gateway with a small one.
    "SNAPSHOE_QUEUE_JOIN_RATE_PER_MINUTE": "100000",
    # Tests check that a released pair is on sale again at once; the hint's own test turns it on.
    "SNAPSHOE_SOLD_OUT_HINT_SECONDS": "0",
    # One process per service: tests read right after they write, and per-process caches
    # (products' 1 s read cache) would make that depend on which worker answers.
    "SNAPSHOE_HTTP_WORKERS": "1",
    # The waiting room's streams on a products process of their own, as a big drop runs them:
    # every stream test then goes through that split (docs/waiting-room.md).
    "SNAPSHOE_PRODUCTS_STREAM_WORKERS": "1",
}

CODE_RE = re.compile(r"\b(\d{6})\b")


def second_platform_env(base: int, name: str) -> dict[str, str]:
    """Ports, namespace and data dir of a second platform from ``base`` (below 32768: ports in
    the kernel's ephemeral range can be taken by outgoing connections), apart from the session's
    platform and other test runs; ``name`` tells its databases and data dir apart."""
    offsets = {
        "GATEWAY_PORT": 0,
        "USERS_PORT": 101,
        "PRODUCTS_PORT": 102,
        "ORDERS_PORT": 103,
        "PAYMENTS_PORT": 104,
        "SANDBOX_PG_PORT": 105,
        "PRODUCTS_STREAMS_PORT": 106,
        "WEB_PORT": 107,
        "MAIL_SINK_SMTP_PORT": 26,
        "SMTP_PORT": 26,
        "MAIL_SINK_HTTP_PORT": 25,
        "GATEWAY_STATS_PORT": 150,
    }
    return {f"SNAPSHOE_{k}": str(base + v) for k, v in offsets.items()} | {
        "SNAPSHOE_NAMESPACE": f"snapshoe_{name}{SLOT}",
        "SNAPSHOE_DATA_DIR": str(ROOT / ".snapshoe" / f"{name}{SLOT}"),
    }


def make_test_settings(**overrides: Any) -> Settings:
    env = {k.removeprefix("SNAPSHOE_").lower(): v for k, v in TEST_ENV.items()}
    return PlatformSettings(**{**env, **overrides})


@dataclass
class User:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Platform:
    def __init__(self, settings: Settings, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.settings = settings
        self.proc = proc
        self.log_path = log_path
        self.gateway = settings.gateway_url

    def url(self, service: str) -> str:
        return self.settings.service_url(service)

    def client(self, ip: str | None = None, base_url: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=ip or fresh_address(), retries=0)
        return httpx.AsyncClient(transport=transport, base_url=base_url or self.gateway, timeout=15)

    async def messages(self, email: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{self.url('mail_sink')}/api/messages", params={"to": email})
            r.raise_for_status()
            data: list[dict[str, Any]] = r.json()
            return data

    async def read_code(self, email: str, *, after: int = 0, timeout: float = 10) -> str:
        """The newest 6-digit code mailed to ``email`` (waits for the mail, up to ``timeout``).
        ``after``: how many messages the mailbox already had, to wait for a new one."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = await self.messages(email)
            if len(msgs) > after:
                for msg in msgs:
                    m = CODE_RE.search(msg["body"])
                    if m:
                        return m.group(1)
            if time.monotonic() > deadline:
                raise AssertionError(f"no code mailed to {email} within {timeout}s: {msgs}")
            await asyncio.sleep(0.05)

    async def verified_user(self, client: httpx.AsyncClient | None = None) -> User:
        own = client is None
        client = client or self.client()
        try:
            email = f"buyer-{secrets.token_hex(6)}@example.com"
            password = "correct-Horse-battery-9"
            r = await client.post(
                "/api/users", json={"email": email, "password": password, "name": "Test Buyer"}
            )
            assert r.status_code == 202, r.text
            code = await self.read_code(email)
            r = await client.post("/api/users/verification", json={"email": email, "code": code})
            assert r.status_code == 200, r.text
            return await self.login(email, password, client)
        finally:
            if own:
                await client.aclose()

    async def login(self, email: str, password: str, client: httpx.AsyncClient) -> User:
        r = await client.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        tokens = r.json()
        me = await client.get(
            "/api/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.status_code == 200, me.text
        return User(
            me.json()["id"], email, password, tokens["access_token"], tokens["refresh_token"]
        )


def reset_state(settings: Settings) -> None:
    """Drop the test databases, this namespace's Redis keys and queues, for a clean run."""
    names = " ".join(
        f"`{settings.database_name(s)}`" for s in ("users", "products", "orders", "payments")
    )
    sql = "; ".join(f"DROP DATABASE IF EXISTS {n}" for n in names.split())
    subprocess.run(
        [
            "mariadb",
            "-h",
            settings.db_host,
            "-P",
            str(settings.db_port),
            "-u",
            settings.db_user,
            "-e",
            sql,
        ],
        check=True,
        env={**os.environ, "MYSQL_PWD": settings.db_password},
    )
    import redis

    # Only this namespace's keys: the db may be shared with a standalone service fixture.
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000):
        client.delete(key)
    client.close()
    asyncio.run(_delete_queues(settings))


async def _delete_queues(settings: Settings) -> None:
    """Queues of an earlier run of this namespace would feed it events about orders that no
    longer exist."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    names = [n.strip() for n in out.splitlines() if n.strip().startswith(f"{settings.namespace}.")]
    if not names:
        return
    import aio_pika

    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def start_platform(
    env_overrides: dict[str, str] | None = None, timeout: float | None = None
) -> Platform:
    env = {**os.environ, **TEST_ENV, **(env_overrides or {}), "NO_COLOR": "1"}
    settings = make_test_settings(
        **{k.removeprefix("SNAPSHOE_").lower(): v for k, v in (env_overrides or {}).items()}
    )
    if timeout is None:
        # up's own deadline (SNAPSHOE_STARTUP_TIMEOUT_SECONDS) covers the processes; add
        # its checks, migrations and config before them. up gives up first and says why.
        timeout = settings.startup_timeout_seconds + 120
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log_path = DATA_DIR / f"up-{settings.gateway_port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshoe.cli", "up", "--no-seed"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        if "SnapShoe is up" in text:
            return Platform(settings, proc, log_path)
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_platform_process(proc)
            raise RuntimeError(
                f"snapshoe up did not start (exit {proc.returncode}):\n{text[-5000:]}"
            )
        time.sleep(0.2)


def stop_platform_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
