"""The alerts fire in a test that causes them (issue 17).

A real Prometheus (Debian's, scripts/ensure-services installs it) runs in a temp dir on a
port of its own, scrapes a platform of this module every 2 s (every service and the
gateway's HAProxy exporter) and evaluates the project's own deploy/prometheus/alerts.yml, with
only the ``for:`` durations shortened (expressions and thresholds as they are). Before anything
is caused no alert is pending or firing; then each condition is caused for real, each alert
checked quiet just before its cause, and /api/v1/alerts polled until it fires:

- ``DeadLetters``: an undecodable message on the exchange, which orders' consumer rejects to
  its DLQ.
- ``PaymentGatewayErrors``: the sandbox PG's fault switch (``error_rate`` 1.0) makes every
  confirm a 500 at the PG, which payments counts ``unknown``.
- ``HighServerErrorRate``: the database goes away; buyers' order lists get 503.
- ``GateDrift``: the Redis gate's pairs left for an item are changed behind the ledger's back.
- ``BrokerDown`` and ``OutboxStuck``: RabbitMQ goes away for the platform; an order placed
  meanwhile waits in orders' outbox past 30 s.

The platform reaches MariaDB and RabbitMQ through TCP proxies of this module, so "the database
goes away" and "the broker goes away" are this platform's outage only: the shared servers,
which other test runs on the machine use, are never stopped. ``GatewayBackendDown`` is only
checked quiet here: the local gateway does not health-check its servers (they are on loopback,
`snapshoe up` supervises them), so it cannot see one down; deploy/prometheus/tests.yml tests it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from tests.e2e.test_purchase_flow import APPROVE, _authorize
from tests.integration.orders.helpers import Buyer, OrdersEnv, key
from tests.support.platform import (
    ROOT,
    TEST_ENV,
    Platform,
    _delete_queues,
    make_test_settings,
    reset_state,
    start_platform,
    stop_platform_process,
)
from tests.support.waiting import eventually

from snapshoe.kernel.contracts.payments import PaymentApproved
from snapshoe.kernel.messaging import exchange_name

pytestmark = pytest.mark.slow

ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
# This module's platform: the slot's ports + 600 (test_db_outage takes + 500; nothing else of
# a slot uses 18600-19004), and beside them its two proxies and Prometheus.
PORT_SHIFT = 600
DB_PROXY_PORT = 18650
AMQP_PROXY_PORT = 18651
PROMETHEUS_PORT = 18652
SHORT_FOR = "2s"
SERVICE_JOBS = ("users", "products", "products_streams", "orders", "payments", "web")
ALERTS = (
    "DeadLetters",
    "OutboxStuck",
    "HighServerErrorRate",
    "GateDrift",
    "PaymentGatewayErrors",
    "BrokerDown",
    "GatewayBackendDown",
)


def _slot_port(port: int) -> int:
    """``port`` of slot 0 moved to this run's slot (the gateway port says which)."""
    return port + int(TEST_ENV["SNAPSHOE_GATEWAY_PORT"]) - 18000


# ---------------------------------------------------------------------------- TCP proxies


class TcpProxy:
    """A TCP forwarder in a thread of its own: ``cut()`` refuses new connections and drops
    every open one, as a server that went away; ``restore()`` listens again."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.WriteTransport] = set()

    def start(self) -> None:
        self.thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.transports |= {writer.transport, up_writer.transport}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self.transports -= {writer.transport, up_writer.transport}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@dataclass
class Outages:
    db: TcpProxy
    amqp: TcpProxy


@pytest.fixture(scope="module")
def outages() -> Iterator[Outages]:
    shared = make_test_settings()
    amqp = urlsplit(shared.amqp_url)
    db = TcpProxy(_slot_port(DB_PROXY_PORT), (shared.db_host, shared.db_port))
    mq = TcpProxy(_slot_port(AMQP_PROXY_PORT), (amqp.hostname or "127.0.0.1", amqp.port or 5672))
    db.start()
    mq.start()
    try:
        yield Outages(db, mq)
    finally:
        db.close()
        mq.close()


@pytest.fixture(scope="module")
def alerts_platform(outages: Outages) -> Iterator[Platform]:
    shared = make_test_settings()
    amqp = urlsplit(shared.amqp_url)
    netloc = amqp.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{outages.amqp.port}"
    overrides = {
        **{
            k: str(int(v) + PORT_SHIFT)
            for k, v in TEST_ENV.items()
            if k.endswith("_PORT") and v.isdigit()
        },
        "SNAPSHOE_DB_HOST": "127.0.0.1",
        "SNAPSHOE_DB_PORT": str(outages.db.port),
        "SNAPSHOE_AMQP_URL": urlunsplit(amqp._replace(netloc=netloc)),
        "SNAPSHOE_NAMESPACE": f"{TEST_ENV['SNAPSHOE_NAMESPACE']}_alerts",
    }
    settings = make_test_settings(
        **{k.removeprefix("SNAPSHOE_").lower(): v for k, v in overrides.items()}
    )
    reset_state(settings)
    running = start_platform(overrides, timeout=240)
    try:
        yield running
    finally:
        outages.db.restore()
        outages.amqp.restore()
        code = stop_platform_process(running.proc)
        # This namespace's queues live on the shared broker: leave none behind.
        asyncio.run(_delete_queues(settings))
        assert code == 0, f"snapshoe up exited with {code}; see {running.log_path}"


@pytest.fixture(scope="module")
async def env(alerts_platform: Platform) -> AsyncIterator[OrdersEnv]:
    e = OrdersEnv(alerts_platform)
    try:
        yield e
    finally:
        await e.aclose()


# ---------------------------------------------------------------------------- Prometheus


def short_for_rules(text: str) -> str:
    """alerts.yml with every ``for:`` set to SHORT_FOR, and nothing else changed (checked)."""
    short = re.sub(r"(?m)^([ \t]+for:[ \t]*)\S+[ \t]*$", rf"\g<1>{SHORT_FOR}", text)
    before, after = yaml.safe_load(text), yaml.safe_load(short)
    for group_a, group_b in zip(before["groups"], after["groups"], strict=True):
        for a, b in zip(group_a["rules"], group_b["rules"], strict=True):
            assert b.pop("for") == SHORT_FOR, a["alert"]
            a.pop("for")
            assert a == b, a["alert"]
    return short


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    async def alerts(self) -> dict[str, dict[str, Any]]:
        """Active alerts: ``alertname{labels}`` -> the alert (``state`` pending or firing)."""
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"{self.url}/api/v1/alerts")
        r.raise_for_status()
        out = {}
        for alert in r.json()["data"]["alerts"]:
            labels = {k: v for k, v in alert["labels"].items() if k != "alertname"}
            out[f"{alert['labels']['alertname']}{sorted(labels.items())}"] = alert
        return out

    async def firing(self, name: str, **labels: str) -> dict[str, Any] | None:
        for alert in (await self.alerts()).values():
            if alert["labels"]["alertname"] != name or alert["state"] != "firing":
                continue
            if all(alert["labels"].get(k) == v for k, v in labels.items()):
                return dict(alert)
        return None

    async def active(self, name: str) -> list[dict[str, Any]]:
        """This alert's pending or firing instances."""
        return [a for a in (await self.alerts()).values() if a["labels"]["alertname"] == name]

    async def quiet(self, *names: str) -> None:
        for name in names:
            assert await self.active(name) == [], (name, await self.active(name))

    async def wait_firing(self, name: str, timeout: float, **labels: str) -> dict[str, Any]:
        started = time.monotonic()
        alert = await eventually(
            lambda: self.firing(name, **labels), lambda a: a is not None, timeout=timeout
        )
        assert alert is not None
        print(f"{name} firing after {time.monotonic() - started:.1f}s: {alert['labels']}")
        return alert

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"{self.url}{path}")
        r.raise_for_status()
        return r.json()["data"]


@pytest.fixture(scope="module")
def prometheus(alerts_platform: Platform) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert os.path.exists(binary), "prometheus is not installed (scripts/ensure-services)"
    settings = alerts_platform.settings
    tmp = Path(tempfile.mkdtemp(prefix="snapshoe-prometheus-"))
    (tmp / "alerts.yml").write_text(short_for_rules(ALERTS_FILE.read_text()))
    jobs = {s: settings.service_port(s) for s in SERVICE_JOBS}
    jobs["gateway"] = settings.gateway_stats_port
    config = {
        # A scrape that times out makes its series stale and resets pending alerts: 2 s leaves
        # room for a /metrics that refreshes its gauges from the database and the broker.
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _slot_port(PROMETHEUS_PORT)
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Prometheus not ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield Prometheus(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- causes


async def dead_letter(env: OrdersEnv) -> None:
    """What a broken publisher sends: orders' payment-events consumer cannot decode it and
    rejects it to ``orders.payments.dlq`` (kernel.consuming)."""
    connection = await aio_pika.connect(make_test_settings().amqp_url)  # the broker itself
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name(env.settings))
        await exchange.publish(
            aio_pika.Message(b"not json {", message_id=secrets.token_hex(8)),
            routing_key=PaymentApproved.routing_key(),
        )


def pg_admin(env: OrdersEnv) -> httpx.AsyncClient:
    secret = base64.b64encode(f"{env.settings.pg_secret_key}:".encode()).decode()
    return httpx.AsyncClient(
        base_url=env.platform.url("sandbox_pg"),
        headers={"Authorization": f"Basic {secret}"},
        timeout=15,
    )


async def order_one(env: OrdersEnv, c: httpx.AsyncClient, item_id: str) -> tuple[Buyer, Any]:
    buyer = env.buyer()
    r = await env.order(c, buyer, [(item_id, 1)])
    assert r.status_code == 201, r.text
    return buyer, r.json()


async def confirm(c: httpx.AsyncClient, buyer: Buyer, order: dict[str, Any]) -> int:
    payment_key = await _authorize(c, order, APPROVE)
    r = await c.post(
        "/api/payments/confirm",
        json={"order_id": order["id"], "payment_key": payment_key, "amount": order["total_amount"]},
        headers={**buyer.auth, "Idempotency-Key": key()},
    )
    return r.status_code


async def ready(env: OrdersEnv, service: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as c:
        try:
            return (await c.get(f"{env.platform.url(service)}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


# ---------------------------------------------------------------------------- the test


async def test_each_alert_fires_when_its_condition_is_caused(
    env: OrdersEnv, prometheus: Prometheus, outages: Outages
) -> None:
    settings = env.settings
    ns = settings.namespace
    started = time.monotonic()

    # Every target scraped, every rule of alerts.yml loaded and evaluated without error.
    await eventually(
        lambda: prometheus.get("/api/v1/targets"),
        lambda t: (
            len(t["activeTargets"]) == len(SERVICE_JOBS) + 1
            and all(x["health"] == "up" for x in t["activeTargets"])
        ),
        timeout=30,
        interval=0.5,
    )
    groups = await eventually(
        lambda: prometheus.get("/api/v1/rules"),
        lambda g: all(
            r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
            for x in g["groups"]
            for r in x["rules"]
        ),
        timeout=15,
        interval=0.5,
    )
    assert {r["name"] for x in groups["groups"] for r in x["rules"]} == set(ALERTS)
    # A few evaluations on a healthy platform: nothing pending, nothing firing.
    await asyncio.sleep(4)
    assert await prometheus.alerts() == {}, await prometheus.alerts()

    async with env.platform.client() as c:
        product, items = await env.drop(c, [20, 5])
        stocked, drifting = items[0]["id"], items[1]["id"]

        # -- DeadLetters: a message orders' consumer cannot apply.
        await prometheus.quiet("DeadLetters")
        await dead_letter(env)
        await prometheus.wait_firing("DeadLetters", 30, queue=f"{ns}.orders.payments.dlq")

        # -- PaymentGatewayErrors: the PG answers every confirm with a 500.
        await prometheus.quiet("PaymentGatewayErrors")
        async with pg_admin(env) as pg:
            r = await pg.put("/v1/sandbox/config", json={"error_rate": 1.0})
            assert r.status_code == 200, r.text
            try:
                answers = [confirm(c, *await order_one(env, c, stocked)) for _ in range(3)]
                assert await asyncio.gather(*answers) == [202] * 3  # unknown at the PG
                await prometheus.wait_firing("PaymentGatewayErrors", 30)
            finally:
                assert (await pg.delete("/v1/sandbox/config")).status_code == 200

        # -- HighServerErrorRate: the database goes away while buyers look at their orders.
        await prometheus.quiet("HighServerErrorRate")
        buyer = env.buyer()
        assert (await c.get("/api/orders", headers=buyer.auth)).status_code == 200
        outages.db.cut()
        try:
            statuses: list[int] = []

            async def look() -> dict[str, Any] | None:
                statuses.append((await c.get("/api/orders", headers=buyer.auth)).status_code)
                return await prometheus.firing("HighServerErrorRate", service="orders")

            await eventually(look, lambda a: a is not None, timeout=30, interval=0.2)
            assert set(statuses) == {503}, statuses
            print(f"HighServerErrorRate firing after {len(statuses)} requests")
        finally:
            outages.db.restore()
        for svc in ("users", "products", "orders", "payments"):
            assert await eventually(lambda s=svc: ready(env, s), bool, timeout=30)  # type: ignore[misc]

        # -- GateDrift, BrokerDown, OutboxStuck: the gate loses a pair behind the ledger's back;
        # then the broker goes away and an order's event waits in the outbox.
        await prometheus.quiet("GateDrift", "BrokerDown", "OutboxStuck")
        product_id = product["id"]
        await order_one(env, c, drifting)  # the item is in the gate now
        gate = aioredis.Redis.from_url(settings.redis_url)
        try:
            avail = f"{ns}:pgate:{{{product_id}}}:avail"
            left = await gate.hget(avail, drifting)
            assert left is not None
            assert int(left) == 4, left  # 5 pairs, 1 reserved
            await gate.hincrby(avail, drifting, -1)
        finally:
            await gate.aclose()
        outages.amqp.cut()
        try:
            await order_one(env, c, stocked)  # accepted; its order.placed waits in the outbox
            await prometheus.wait_firing("BrokerDown", 30, service="orders")
            await prometheus.wait_firing("GateDrift", 45)
            await prometheus.wait_firing("OutboxStuck", 50, service="orders")
        finally:
            outages.amqp.restore()

    # GatewayBackendDown is never caused here: every backend stayed up. Its selector does
    # match the real gateway's series (one per backend it watches), so quiet means "up".
    await prometheus.quiet("GatewayBackendDown")
    rule = next(
        r for x in groups["groups"] for r in x["rules"] if r["name"] == "GatewayBackendDown"
    )
    assert rule["query"].endswith("== 0"), rule["query"]
    up = await prometheus.get(f"/api/v1/query?query={quote(rule['query'][:-4] + '> 0')}")
    backends = {s["metric"]["proxy"] for s in up["result"]}
    assert backends == {"users", "products", "products_streams", "orders", "payments", "web"}
    print(f"all alerts fired in {time.monotonic() - started:.0f}s")
