# ruff: noqa: S603, S607 (fixed binaries: redis-server, mariadbd, mariadb, rabbitmqctl)
"""The platform a fault run breaks (issue 18): its own, so that killing its Redis or stopping its
database touches nothing else on the machine.

- a private ``redis-server`` on a port of its own, in a temp dir, RDB snapshots on demand
  (``SAVE``, then copied aside), no automatic saves;
- a private ``mariadbd`` initialised in a temp dir (``mariadb-install-db``) on a port of its
  own, stopped with a real shutdown and started again on the same datadir;
- the shared RabbitMQ (its outage is ``rabbitmqctl stop_app`` / ``start_app``; the run's own
  namespace keeps its queues apart and they are deleted at the end);
- ``snapshoe up --no-seed`` as a subprocess with every port, the namespace and the data dir of
  its own, pointed at those.

The children of that ``snapshoe up`` are found by command line (``bench.usage``'s process
table): ``serve orders`` is ``orders``, ``worker orders`` is ``orders-worker``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshoe.bench.usage import _processes
from snapshoe.kernel.settings import Settings

# Offsets of a platform's ports from its base (tests/support/platform.second_platform_env).
PORT_OFFSETS = {
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
# Below the kernel's ephemeral range (32768+), above the test slots (18000-24999).
BASES = tuple(range(25_000, 32_000, 500))


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_base() -> int:
    """A base whose every platform port (and the two stores' above it) is free."""
    for base in BASES:
        ports = [base + o for o in PORT_OFFSETS.values()] + [base + 200, base + 201]
        if not any(_port_busy(p) for p in ports):
            return base
    raise RuntimeError("no free port range for the fault run's platform (25000-31999)")


def _wait(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            code = proc.poll() if proc is not None else None
            raise RuntimeError(f"{what} did not start (exit {code})")
        time.sleep(0.1)


@dataclass
class PrivateRedis:
    """A redis-server of the run's own. ``kill`` is a crash (SIGKILL: nothing saved);
    ``start`` loads ``dump.rdb`` if there is one."""

    dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def dump(self) -> Path:
        return self.dir / "dump.rdb"

    def start(self, timeout: float = 30) -> None:
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "4000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: self.info("run_id") is not None, timeout, "private redis-server", self.proc)

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def info(self, key: str) -> Any:
        try:
            c = self.client()
            try:
                return c.info().get(key)
            finally:
                c.close()
        except Exception:  # not up (yet): the caller waits or reports
            return None

    def dbsize(self) -> int | None:
        try:
            c = self.client()
            try:
                return int(c.dbsize())
            finally:
                c.close()
        except Exception:  # not up
            return None

    def snapshot(self, name: str) -> Path:
        """An RDB snapshot of now, kept aside as ``name``."""
        c = self.client()
        try:
            c.save()
        finally:
            c.close()
        kept = self.dir / name
        shutil.copyfile(self.dump, kept)
        return kept

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *, from_snapshot: Path | None, down_seconds: float = 0.0) -> None:
        """SIGKILL, then start again empty (``from_snapshot=None``) or from that RDB file."""
        self.kill()
        with contextlib.suppress(FileNotFoundError):
            self.dump.unlink()
        if from_snapshot is not None:
            shutil.copyfile(from_snapshot, self.dump)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PrivateMariaDB:
    """A mariadbd of the run's own in ``dir`` (tests/e2e/test_db_outage.py's, moved here)."""

    dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    def install(self) -> None:
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60) -> None:
        log = (self.dir / "mariadbd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.dir / 'mariadb.sock'}",
                f"--pid-file={self.dir / 'mariadb.pid'}",
                "--skip-grant-tables",
                *(["--user=root"] if os.geteuid() == 0 else []),  # refuses root otherwise
                "--skip-log-bin",
                "--innodb-buffer-pool-size=128M",
                "--max-connections=1000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(self.accepts, timeout, "private mariadbd", self.proc)

    def accepts(self) -> bool:
        r = subprocess.run(
            ["mariadb", "-h", "127.0.0.1", "-P", str(self.port), "-u", "root", "-e", "SELECT 1"],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0

    def stop(self, timeout: float = 60) -> None:
        """A real shutdown: SIGTERM, then wait for the server to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def rabbitmqctl(*args: str, timeout: float = 60) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=timeout)


def broker_accepts(amqp_url: str) -> bool:
    import asyncio

    import aio_pika

    async def go() -> bool:
        try:
            conn = await aio_pika.connect(amqp_url, timeout=2)
        except Exception:  # not accepting yet
            return False
        await conn.close()
        return True

    return asyncio.run(go())


def broker_start(amqp_url: str, within: float = 60) -> None:
    """``start_app`` and wait until it takes connections again."""
    rabbitmqctl("start_app")
    _wait(lambda: broker_accepts(amqp_url), within, "RabbitMQ (start_app)", None)


def delete_queues(settings: Settings) -> None:
    """The run's queues on the shared broker (its namespace's), so none is left behind."""
    import asyncio

    import aio_pika

    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    names = [n.strip() for n in out.splitlines() if n.strip().startswith(f"{settings.namespace}.")]
    if not names:
        return

    async def go() -> None:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)

    asyncio.run(go())


def child_name(cmd: str) -> str | None:
    """The supervisor's name of a child by its command line (``... snapshoe.cli serve orders``
    is ``orders``, ``worker orders`` is ``orders-worker``, HAProxy is ``gateway``)."""
    words = cmd.split()
    if "haproxy" in cmd and words and words[0].endswith("haproxy"):
        return "gateway"
    for n, w in enumerate(words[:-1]):
        if w == "serve" and "snapshoe.cli" in words[:n]:
            return words[n + 1]
        if w == "worker" and "snapshoe.cli" in words[:n]:
            return f"{words[n + 1]}-worker"
    return None


def children(up_pid: int) -> dict[str, int]:
    """name -> pid of each child of the ``snapshoe up`` process ``up_pid``."""
    out: dict[str, int] = {}
    for pid, (ppid, cmd) in _processes().items():
        if ppid == str(up_pid) and (name := child_name(cmd)) is not None:
            out.setdefault(name, int(pid))
    return out


@dataclass
class FaultEnv:
    """The stores, the platform and their settings; ``start()`` then ``close()`` (always)."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="snapshoe-faults-")))
    base: int = 0
    name: str = field(default_factory=lambda: f"snapshoe_faults_{secrets.token_hex(3)}")
    http_workers: int = 1
    order_ttl_seconds: int = 90
    extra_env: dict[str, str] = field(default_factory=dict)
    redis: PrivateRedis | None = None
    db: PrivateMariaDB | None = None
    up: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    broker_stopped: bool = False
    log_path: Path | None = None
    log: Any = print

    def platform_env(self) -> dict[str, str]:
        assert self.redis is not None
        assert self.db is not None
        ports = {f"SNAPSHOE_{k}": str(self.base + v) for k, v in PORT_OFFSETS.items()}
        return {
            **ports,
            "SNAPSHOE_ENVIRONMENT": "test",  # the sandbox PG's buyer routes, the dev secrets
            # drop.lua's rare extra request is the floor route (a 404 without the baselines).
            "SNAPSHOE_BENCH_BASELINES": "true",
            "SNAPSHOE_NAMESPACE": self.name,
            "SNAPSHOE_DATA_DIR": str(self.tmp / "data"),
            "SNAPSHOE_DB_HOST": "127.0.0.1",
            "SNAPSHOE_DB_PORT": str(self.db.port),
            "SNAPSHOE_DB_USER": "root",
            "SNAPSHOE_DB_PASSWORD": "",
            "SNAPSHOE_REDIS_URL": self.redis.url,
            "SNAPSHOE_HTTP_WORKERS": str(self.http_workers),
            "SNAPSHOE_PRODUCTS_STREAM_WORKERS": "0",
            "SNAPSHOE_METRICS_DIR": str(self.tmp / "metrics"),
            # Every order attempt asks products (the gate in Redis is what faults break).
            "SNAPSHOE_SOLD_OUT_HINT_SECONDS": "0",
            # A reservation whose order was never written (orders killed between the two) is
            # released by products' sweeper at reserved_until + 30 s, and reserved_until is
            # the payment window: a short one lets the run settle within minutes, not 10.5;
            # too short (45 s) and payments delayed by the faults land after the expiry.
            "SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS": str(self.order_ttl_seconds),
            # The sandbox PG stands for the external PG: its records must not live in the
            # Redis the nemesis wipes (they would vanish with it, and the checker reads them).
            "SNAPSHOE_SANDBOX_PG_STORE": "memory",
            "SNAPSHOE_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def start(self, timeout: float = 300) -> Settings:
        self.base = self.base or free_base()
        self.redis = PrivateRedis(self.tmp / "redis", self.base + 200)
        self.redis.dir.mkdir(parents=True)
        self.db = PrivateMariaDB(self.tmp / "mariadb", self.base + 201)
        self.db.dir.mkdir(parents=True)
        self.log(
            f"faults env: private Redis :{self.redis.port}, MariaDB :{self.db.port} in {self.tmp}"
        )
        self.redis.start()
        self.db.install()
        self.db.start()
        self.env = self.platform_env()
        fields: dict[str, Any] = {
            k.removeprefix("SNAPSHOE_").lower(): v for k, v in self.env.items()
        }
        self.settings = Settings(**fields)
        self.log(f"faults env: snapshoe up at {self.settings.gateway_url} ({self.name})")
        self.log_path = self.tmp / "up.log"
        log = self.log_path.open("wb")
        self.up = subprocess.Popen(
            [sys.executable, "-m", "snapshoe.cli", "up", "--no-seed"],
            env={**os.environ, **self.env, "NO_COLOR": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while "SnapShoe is up" not in self.log_path.read_text(errors="replace"):
            if self.up.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"snapshoe up did not start (exit {self.up.poll()}):\n{tail}")
            time.sleep(0.3)
        return self.settings

    @property
    def kept_log(self) -> Path:
        """Where ``snapshoe up``'s log is kept after ``close()`` (the temp dir goes)."""
        return Path(tempfile.gettempdir()) / f"{self.name}-up.log"

    def children(self) -> dict[str, int]:
        assert self.up is not None
        return children(self.up.pid)

    def platform_alive(self) -> bool:
        return self.up is not None and self.up.poll() is None

    def restore(self) -> None:
        """Whatever a fault left broken, mended: the broker started, the stores running."""
        if self.broker_stopped and self.settings is not None:
            broker_start(self.settings.amqp_url)
            self.broker_stopped = False
        if self.db is not None and not self.db.running():
            self.db.start()
        if self.redis is not None and not self.redis.running():
            self.redis.start()

    def close(self, keep: bool = False) -> None:
        """Stop everything this run started (the broker always started again first)."""
        try:
            self.restore()
        finally:
            if self.up is not None and self.up.poll() is None:
                self.up.send_signal(signal.SIGINT)
                try:
                    self.up.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.up.pid, signal.SIGKILL)
                    self.up.wait()
            if self.settings is not None:
                with contextlib.suppress(Exception):
                    delete_queues(self.settings)
            if self.db is not None:
                self.db.stop()
            if self.redis is not None:
                self.redis.kill()
            if self.log_path is not None and self.log_path.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.log_path, self.kept_log)
                    self.log_path = self.kept_log
            if not keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
