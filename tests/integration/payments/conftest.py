"""Fixtures of the payments integration tests.

Payments on its own, on real infrastructure: MariaDB, Redis, RabbitMQ and the platform's
sandbox PG are real; the payments app (``create_app``) and its workers (``workers.run``: relay,
refund consumer, reconciler) run in-process in their own namespace (``snapshoe_ptest``: own
database, exchange and queues), and the orders service is :class:`FakeOrders`, so each test
decides the order's buyer, status and total. The namespace keeps the platform's real orders
service out: it would (rightly) refund every approval of an order it does not know. Tokens are
the platform's real ones (same signing keys). The whole flow with the real orders service is
the e2e test (tests/e2e/test_purchase_flow.py).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from tests.support.platform import Platform, User

from snapshoe.kernel.clients import UpstreamProblem
from snapshoe.kernel.contracts import Event
from snapshoe.kernel.contracts.internal_orders import InternalOrder
from snapshoe.kernel.db import drop_database
from snapshoe.kernel.messaging import exchange_name
from snapshoe.kernel.migrate import migrate_service
from snapshoe.kernel.settings import Settings
from snapshoe.payments import workers
from snapshoe.payments.bootstrap import create_app
from snapshoe.payments.deps import Deps

NAMESPACE = "snapshoe_ptest"


class FakeOrders:
    """Stands in for ``kernel.clients.orders.OrdersClient``."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def add(self, buyer_id: str, total: int, **overrides: Any) -> dict[str, Any]:
        order = {
            "id": "ord" + secrets.token_urlsafe(16),
            "buyer_id": buyer_id,
            "status": "PENDING_PAYMENT",
            "total_amount": total,
            "expires_at": (datetime.now(UTC) + timedelta(minutes=10))
            .isoformat()
            .replace("+00:00", "Z"),
            **overrides,
        }
        self.orders[order["id"]] = order
        return order

    async def get_order(self, order_id: str) -> InternalOrder:
        self.calls += 1
        order = self.orders.get(order_id)
        if order is None:
            raise UpstreamProblem(404, "not_found", {"code": "not_found"})
        return InternalOrder.model_validate(order)

    async def aclose(self) -> None:
        return None


@dataclass
class Payments:
    """The in-process payments app (confirm) and helpers around the sandbox PG."""

    platform: Platform
    settings: Settings
    http: httpx.AsyncClient
    orders: FakeOrders
    deps: Deps
    pg: httpx.AsyncClient

    async def confirm(
        self,
        user: User,
        order_id: str,
        payment_key: str,
        amount: Any,
        key: str | None = None,
    ) -> httpx.Response:
        return await self.http.post(
            "/api/payments/confirm",
            json={"order_id": order_id, "payment_key": payment_key, "amount": amount},
            headers={**user.auth, "Idempotency-Key": key or secrets.token_hex(12)},
        )

    async def authorize(self, order_id: str, amount: int, card: str = "4111111111110000") -> str:
        r = await self.pg.post(
            "/v1/sandbox/authorizations",
            json={"order_id": order_id, "amount": amount, "card_number": card},
        )
        assert r.status_code == 200, r.text
        key: str = r.json()["payment_key"]
        return key

    async def charges(self, order_id: str) -> dict[str, Any]:
        r = await self.pg.get(f"/v1/sandbox/orders/{order_id}/charges")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def wait_status(
        self, user: User, payment_id: str, status: str, within: float = 20
    ) -> dict[str, Any]:
        """Poll ``GET /api/payments/{id}`` until ``status``."""
        deadline = time.monotonic() + within
        while True:
            r = await self.http.get(f"/api/payments/{payment_id}", headers=user.auth)
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] == status:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"payment {payment_id} is {body}, not {status}")
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def harness_settings(platform: Platform) -> Settings:
    # The PG recheck and the sweeper run often and soon, so their tests wait seconds; the
    # sandbox's webhooks go to the platform's payments, which does not know these payments:
    # here only the recheck can find a refund made at the PG.
    return platform.settings.model_copy(
        update={
            "namespace": NAMESPACE,
            "pg_recheck_interval_seconds": 1.0,
            "refund_sweep_interval_seconds": 0.5,
            "refund_sweep_grace_seconds": 1.0,
        }
    )


@pytest.fixture(scope="session")
async def payments(platform: Platform, harness_settings: Settings) -> AsyncIterator[Payments]:
    settings = harness_settings
    await drop_database(settings, "payments")
    await migrate_service(settings, "payments")
    stop = asyncio.Event()
    fake = FakeOrders()
    worker = asyncio.create_task(workers.run(settings, stop, orders=fake))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        deps: Deps = app.state.deps
        real_orders = deps.orders
        deps.orders = fake
        secret = base64.b64encode(f"{platform.settings.pg_secret_key}:".encode()).decode()
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://payments", timeout=30) as http,
            httpx.AsyncClient(
                base_url=platform.url("sandbox_pg"),
                headers={"Authorization": f"Basic {secret}"},
                timeout=30,
            ) as pg,
        ):
            r = await pg.delete("/v1/sandbox/config")  # knobs back to defaults
            assert r.status_code == 200, r.text
            yield Payments(platform, settings, http, fake, deps, pg)
        await real_orders.aclose()
    stop.set()
    await asyncio.wait_for(worker, 15)


@pytest.fixture(scope="session")
async def buyer(platform: Platform) -> User:
    return await platform.verified_user()


@pytest.fixture(scope="session")
async def other_buyer(platform: Platform) -> User:
    return await platform.verified_user()


@dataclass
class EventTap:
    """Every ``payment.*`` event the relay publishes, from a private queue on the exchange."""

    received: list[dict[str, Any]] = field(default_factory=list)

    def of(self, event_type: str, order_id: str) -> list[dict[str, Any]]:
        return [
            e for e in self.received if e["event_type"] == event_type and e["order_id"] == order_id
        ]

    async def wait(
        self, event_type: str, order_id: str, within: float = 15, count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` such events arrived (the relay publishes after commit)."""
        deadline = time.monotonic() + within
        while len(self.of(event_type, order_id)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event_type} for {order_id}")
            await asyncio.sleep(0.1)
        return self.of(event_type, order_id)


@pytest.fixture(scope="session")
async def events(harness_settings: Settings) -> AsyncIterator[EventTap]:
    tap = EventTap()
    connection = await aio_pika.connect_robust(harness_settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name(harness_settings), aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="payment.#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                tap.received.append(orjson.loads(message.body))

        await queue.consume(on_message)
        yield tap


Publish = Callable[[Event], Awaitable[None]]


@pytest.fixture(scope="session")
async def publish(harness_settings: Settings) -> AsyncIterator[Publish]:
    """Publish an integration event onto ``<namespace>.events`` as a service relay would."""
    connection = await aio_pika.connect_robust(harness_settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name(harness_settings), aio_pika.ExchangeType.TOPIC, durable=True
        )

        async def send(event: Event) -> None:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(event.to_message()),
                    message_id=event.event_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.routing_key(),
            )

        yield send
