"""MariaDB stopped for 5 s while payments are being confirmed (issue 12, item 12).

Before the fix a consumer nacked any exception after 0.2 s and the queue's delivery limit was
5, so a ``payment.approved`` in flight during a one-second outage landed in the DLQ for good:
the buyer was charged and the order expired. Now a transient backend error is retried in the
consumer while it holds the message: afterwards every order reaches its right final state,
nothing is in any DLQ, and every charge at the PG has its order (no charge without an order).

The shared MariaDB (3306) is never touched: this module starts a private ``mariadbd`` in a temp
dir on its own port, and its own platform (own namespace and ports) against it, then stops
that server with a real shutdown (SIGTERM, wait) and starts it again on the same datadir.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.e2e.test_purchase_flow import APPROVE, DECLINE, _authorize
from tests.integration.orders.helpers import Buyer, OrdersEnv, key
from tests.support.platform import (
    TEST_ENV,
    Platform,
    _delete_queues,
    fresh_address,
    reset_state,
    start_platform,
    stop_platform_process,
)
from tests.support.waiting import eventually

from snapshoe.kernel.deadletters import dlq_depths
from snapshoe.kernel.messaging import exchange_name
from snapshoe.kernel.settings import Settings

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 5.0
BUYERS = 30
CONFIRMS_OVER_SECONDS = 6.0  # confirms start spread over this window ...
OUTAGE_STARTS_AT = 2.5  # ... and the database goes down inside it
SETTLE_TIMEOUT = 120.0
QUEUES = ("orders.payments", "payments.refunds", "users.cart")
# Ports of this module's platform: its slot's ports + 500 (no other slot uses 18500-18904).
PORT_SHIFT = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateMariaDB:
    datadir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        log = (self.datadir.parent / "mariadbd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.datadir.parent / 'mariadb.sock'}",
                f"--pid-file={self.datadir.parent / 'mariadb.pid'}",
                "--skip-grant-tables",
                *(["--user=root"] if os.geteuid() == 0 else []),  # mariadbd refuses root otherwise
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private mariadbd did not start (exit {self.proc.poll()})")
            time.sleep(0.2)

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


@pytest.fixture(scope="module")
def private_db() -> Iterator[PrivateMariaDB]:
    tmp = Path(tempfile.mkdtemp(prefix="snapshoe-dbout-"))
    datadir = tmp / "data"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    db = PrivateMariaDB(datadir, _free_port())
    try:
        db.start()
        yield db
    finally:
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def outage_platform(private_db: PrivateMariaDB) -> Iterator[Platform]:
    ports = {
        k: str(int(v) + PORT_SHIFT)
        for k, v in TEST_ENV.items()
        if k.endswith("_PORT") and v.isdigit()
    }
    overrides = {
        **ports,
        "SNAPSHOE_DB_PORT": str(private_db.port),
        "SNAPSHOE_NAMESPACE": f"{TEST_ENV['SNAPSHOE_NAMESPACE']}_dbout",
    }
    from tests.support.platform import make_test_settings

    settings = make_test_settings(
        **{k.removeprefix("SNAPSHOE_").lower(): v for k, v in overrides.items()}
    )
    reset_state(settings)
    running = start_platform(overrides, timeout=240)
    try:
        yield running
    finally:
        code = stop_platform_process(running.proc)
        # This namespace's queues live on the shared broker: leave none behind.
        asyncio.run(_delete_queues(settings))
        assert code == 0, f"snapshoe up exited with {code}; see {running.log_path}"


@pytest.fixture(scope="module")
async def env(outage_platform: Platform) -> AsyncIterator[OrdersEnv]:
    e = OrdersEnv(outage_platform)
    try:
        yield e
    finally:
        await e.aclose()


@dataclass
class Run:
    first: Counter[int] = field(default_factory=Counter)  # first confirm answer per status
    expected: dict[str, str] = field(default_factory=dict)  # order id -> final status
    errors: list[str] = field(default_factory=list)


async def _confirm_until_final(
    c: httpx.AsyncClient, buyer: Buyer, order: dict[str, Any], payment_key: str, run: Run
) -> None:
    """A buyer's client: confirm, and on an answer that is not final (503 while the database
    is away, 202 while the payment is unresolved) ask again, as the contract allows."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    first = True
    while True:
        r = await c.post(
            "/api/payments/confirm",
            json={
                "order_id": order["id"],
                "payment_key": payment_key,
                "amount": order["total_amount"],
            },
            headers={**buyer.auth, "Idempotency-Key": key()},
        )
        if first:
            run.first[r.status_code] += 1
            first = False
        if r.status_code == 200:
            run.expected[order["id"]] = "PREPARING"
            return
        if r.status_code == 402:
            run.expected[order["id"]] = "PAYMENT_FAILED"
            return
        if r.status_code not in (202, 409, 500, 502, 503, 504):
            run.errors.append(f"confirm: {r.status_code} {r.text}")
            return
        if time.monotonic() > deadline:
            run.errors.append(f"confirm never final: {r.status_code} {r.text}")
            return
        await asyncio.sleep(1)


async def _pg_status(c: httpx.AsyncClient, settings: Settings, order_id: str) -> str:
    secret = base64.b64encode(f"{settings.pg_secret_key}:".encode()).decode()
    r = await c.get(
        f"{settings.service_url('sandbox_pg')}/v1/payments/orders/{order_id}",
        headers={"Authorization": f"Basic {secret}"},
    )
    if r.status_code == 404:
        return "NONE"
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


async def _payment_events(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    engine = create_async_engine(settings.database_url("payments"), poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT routing_key, body FROM outbox WHERE published_at IS NOT NULL")
            )
            return [(r[0], orjson.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in rows]
    finally:
        await engine.dispose()


async def _publish_raw(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name(settings))
        for routing_key, body in events:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(body),
                    message_id=body["event_id"],
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=body["event_type"],
                ),
                routing_key=routing_key,
            )


async def test_a_database_outage_while_confirming_loses_no_payment_event(
    env: OrdersEnv, outage_platform: Platform, private_db: PrivateMariaDB
) -> None:
    platform = outage_platform
    settings = env.settings
    transport = httpx.AsyncHTTPTransport(
        local_address=fresh_address(),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )
    async with httpx.AsyncClient(transport=transport, base_url=platform.gateway, timeout=60) as c:
        _, items = await env.drop(c, [BUYERS])
        orders: list[tuple[Buyer, dict[str, Any], str]] = []
        for n in range(BUYERS):
            buyer = env.buyer()
            r = await env.order(c, buyer, [(items[0]["id"], 1)])
            assert r.status_code == 201, r.text
            order = r.json()
            card = DECLINE if n % 4 == 0 else APPROVE
            orders.append((buyer, order, await _authorize(c, order, card)))

        run = Run()
        step = CONFIRMS_OVER_SECONDS / BUYERS

        async def buyer_task(i: int) -> None:
            await asyncio.sleep(i * step)
            buyer, order, payment_key = orders[i]
            await _confirm_until_final(c, buyer, order, payment_key, run)

        tasks = [asyncio.create_task(buyer_task(i)) for i in range(BUYERS)]
        try:
            await asyncio.sleep(OUTAGE_STARTS_AT)
            # The payment events so far, as the payments relay published them (on a loaded
            # machine the first confirms may take longer than OUTAGE_STARTS_AT) ...
            in_flight = await _payment_events(settings)
            for _ in range(60):
                if in_flight:
                    break
                await asyncio.sleep(0.5)
                in_flight = await _payment_events(settings)
            await asyncio.to_thread(private_db.stop)
            down_at = time.monotonic()
            # ... published again while the database is away: what the consumers receive when
            # the relay publishes a batch just before the outage (or again after a crash
            # between publish and mark). Before the fix each was dead-lettered within ~1 s.
            await _publish_raw(settings, in_flight)
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            await asyncio.to_thread(private_db.start)
            back_at = time.monotonic()
            print(f"MariaDB down {back_at - down_at:.1f}s")
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            if private_db.proc is None or private_db.proc.poll() is not None:
                await asyncio.to_thread(private_db.start)
        await asyncio.gather(*tasks)

        assert not run.errors, run.errors[:5]
        assert len(in_flight) > 0
        # The outage really hit confirms, and both outcomes happened.
        assert sum(n for s, n in run.first.items() if s not in (200, 402)) > 0, run.first
        assert "PREPARING" in run.expected.values(), run.expected
        assert "PAYMENT_FAILED" in run.expected.values(), run.expected

        async def statuses() -> dict[str, str]:
            async with env.orders_db.connect() as conn:
                rows = await conn.execute(
                    text("SELECT id, status FROM orders WHERE id IN :ids").bindparams(
                        ids=tuple(o["id"] for _, o, _ in orders)
                    )
                )
                return {r[0]: r[1] for r in rows}

        try:
            final = await eventually(
                statuses, lambda s: s == run.expected, timeout=SETTLE_TIMEOUT, interval=0.5
            )
        finally:
            print(f"first confirm answers: {dict(run.first)}")
        print(f"all {len(final)} orders final {time.monotonic() - back_at:.1f}s after restart")

        # Nothing dead-lettered.
        depths = await dlq_depths(settings, QUEUES)
        assert set(depths) == {f"{settings.namespace}.{q}.dlq" for q in QUEUES}, depths
        assert sum(depths.values()) == 0, depths

        # The same, as each service's /metrics exports it (read from the broker at scrape).
        for svc, queue in (("orders", "orders.payments"), ("payments", "payments.refunds")):
            metrics = (await c.get(f"{platform.url(svc)}/metrics")).text
            line = f'snapshoe_events_dlq_messages{{queue="{settings.namespace}.{queue}.dlq"}} 0.0'
            assert line in metrics, (svc, [m for m in metrics.splitlines() if "dlq" in m])

        # No charge without an order: every payment done at the PG has its PREPARING order,
        # and every PREPARING order is charged.
        for _, order, _ in orders:
            pg = await _pg_status(c, settings, order["id"])
            assert (pg == "DONE") == (final[order["id"]] == "PREPARING"), (order["id"], pg)

        # The consumers did meet the outage and retried without spending a delivery.
        log = platform.log_path.read_text(errors="replace")
        retries = log.count("without spending a delivery")
        print(f"transient retries logged: {retries}")
        assert retries > 0
