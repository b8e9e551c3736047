"""A purchase followed as traces, on a second platform whose processes export over OTLP to a
real OTLP/HTTP endpoint run by the test (tests/support/otlp.py): the order's request is one
trace through the gateway (which continued the client's traceparent), orders and products, the
database and Redis, and the order.placed event to its consumers; the payment's request is one
trace through payments and the PG to the orders consumer that marks the order paid; the
lifecycle worker's batch that ships the order links back to the order's trace, and its event
continues into the consumers. A request without a traceparent gets a trace the gateway
started."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from tests.integration.orders.helpers import APPROVE_CARD, OrdersEnv, key
from tests.support.net import free_port
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.platform import (
    SLOT,
    Platform,
    make_test_settings,
    reset_state,
    second_platform_env,
    start_platform,
    stop_platform_process,
)

STAGE = 2.0
T = TypeVar("T")


async def eventually(check: Callable[[], T], *, timeout: float) -> T:
    """``check()`` once it stops failing its assertions (spans arrive in export batches)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(free_port()) as r:
        yield r


@pytest.fixture(scope="module")
def traced_platform(receiver: OtlpReceiver) -> Iterator[Platform]:
    overrides = second_platform_env(30000 + SLOT * 200, "tracetest") | {
        "SNAPSHOE_OTLP_ENDPOINT": receiver.endpoint,
        "SNAPSHOE_ORDER_STAGE_SECONDS": str(STAGE),
    }
    reset_state(make_test_settings(**{k[9:].lower(): v for k, v in overrides.items()}))
    # The SDK's batch processor exports every 5 s by default; the test reads sooner.
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    try:
        running = start_platform(overrides)
    finally:
        del os.environ["OTEL_BSP_SCHEDULE_DELAY"]
    try:
        yield running
    finally:
        code = stop_platform_process(running.proc)
        assert code == 0, running.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
async def env(traced_platform: Platform) -> Any:
    e = OrdersEnv(traced_platform)
    try:
        yield e
    finally:
        await e.aclose()


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def _one(spans: list[ReceivedSpan], **match: str) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert found, f"no span {match} among {[(s.service, s.kind, s.name) for s in spans]}"
    return found[0]


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


async def test_a_purchase_is_followed_from_the_gateway_to_the_lifecycle_worker(
    env: OrdersEnv, receiver: OtlpReceiver
) -> None:
    order_trace, client_span, order_tp = _traceparent()
    pay_trace, _, pay_tp = _traceparent()
    async with env.client() as c:
        _, items = await env.drop(c, [3])
        buyer = env.buyer()
        r = await c.post(
            "/api/orders",
            json={"lines": [{"item_id": items[0]["id"], "quantity": 1}]},
            headers={**buyer.auth, "Idempotency-Key": key(), "traceparent": order_tp},
        )
        assert r.status_code == 201, r.text
        order = r.json()
        auth = await c.post(
            "/pg/v1/sandbox/authorizations",
            json={
                "order_id": order["id"],
                "amount": order["total_amount"],
                "card_number": APPROVE_CARD,
            },
        )
        assert auth.status_code == 200, auth.text
        paid = await c.post(
            "/api/payments/confirm",
            json={
                "order_id": order["id"],
                "payment_key": auth.json()["payment_key"],
                "amount": order["total_amount"],
            },
            headers={**buyer.auth, "Idempotency-Key": key(), "traceparent": pay_tp},
        )
        assert paid.status_code == 200, paid.text

    # The order's request: gateway -> orders -> products, the database, Redis, the event.
    def placed() -> list[ReceivedSpan]:
        spans = receiver.trace(order_trace)
        assert {"orders", "products"} <= {s.service for s in spans}
        assert any(
            s.kind == "consumer" and s.name.startswith("process order.placed") for s in spans
        )
        assert any(s.kind == "producer" for s in spans)
        assert any(s.service == "orders" and s.name.startswith("INSERT") for s in spans), [
            (s.service, s.kind, s.name) for s in spans
        ]
        return spans

    spans = await eventually(placed, timeout=30)
    server = _one(spans, service="orders", kind="server", name="POST /api/orders")
    assert server.parent_span_id == client_span  # the gateway continued the client's trace
    calls = [s for s in _children(spans, server) if s.kind == "client"]
    products = [s for s in spans if s.service == "products" and s.kind == "server"]
    assert any(p.parent_span_id in {c.span_id for c in calls} for p in products)
    # The order's row is written by a group commit: its span is this request's child here
    # (the first order of its batch) and links to every order of the batch.
    commit = _one(spans, service="orders", name="group commit orders_placements")
    assert (order_trace, server.span_id) in commit.links
    assert any(s.name.startswith("INSERT") for s in _children(spans, commit))
    assert any("db.system" in s.attributes or "db.system.name" in s.attributes for s in spans)
    assert any(s.service == "products" and s.kind == "client" for s in spans)  # Redis, the gate
    publish = _one(spans, kind="producer", name="publish order.placed.v1")
    assert publish.service == "orders-worker"
    consumers = [s for s in spans if s.kind == "consumer" and s.parent_span_id == publish.span_id]
    assert consumers, "nobody continued the order.placed trace"

    # The payment's request reaches the orders consumer that marks the order paid.
    def approved() -> list[ReceivedSpan]:
        spans = receiver.trace(pay_trace)
        assert any(
            s.service == "orders-worker" and s.kind == "consumer" and "payment" in s.name
            for s in spans
        )
        return spans

    pay_spans = await eventually(approved, timeout=30)
    confirm = _one(pay_spans, service="payments", kind="server", name="POST /api/payments/confirm")
    assert any(s.service == "sandbox_pg" and s.kind == "server" for s in pay_spans), {
        (s.service, s.name) for s in pay_spans
    }
    paying = _one(pay_spans, service="orders-worker", kind="consumer")
    assert paying.trace_id == confirm.trace_id
    assert _children(pay_spans, paying), "the consumer's own work (its SQL) is in the trace"

    # The lifecycle worker ships the order in a batch linked to the order's trace.
    def shipped() -> ReceivedSpan:
        batches = [
            s
            for s in receiver.snapshot()
            if s.name.startswith("lifecycle ") and any(t == order_trace for t, _ in s.links)
        ]
        assert len(batches) >= 2  # prepare -> ship -> deliver, each its own batch
        return batches[-1]

    batch = await eventually(shipped, timeout=10 * STAGE + 20)
    assert batch.service == "orders-worker"
    assert (order_trace, server.span_id) in batch.links

    def continued() -> list[ReceivedSpan]:
        later = [s for s in receiver.trace(batch.trace_id) if s.kind == "consumer"]
        assert later
        return later

    await eventually(continued, timeout=30)


async def test_a_request_without_a_traceparent_gets_one_from_the_gateway(
    env: OrdersEnv, receiver: OtlpReceiver
) -> None:
    async with env.client() as c:
        r = await c.get("/api/products", params={"q": secrets.token_hex(4)})
    assert r.status_code == 200, r.text

    def listed() -> ReceivedSpan:
        return _one(
            receiver.snapshot(), service="products", kind="server", name="GET /api/products"
        )

    span = await eventually(listed, timeout=30)
    # Its parent is the gateway's: a remote parent nobody exported (HAProxy records no spans).
    assert span.parent_span_id
    assert span.parent_span_id not in {s.span_id for s in receiver.snapshot()}
    assert receiver.requests > 0
