"""RabbitMQ consumers of the payments service: order events that require a refund."""

from __future__ import annotations

import asyncio

from snapshoe.kernel.contracts.orders import OrderCancelled, OrderRefundRequired
from snapshoe.kernel.messaging import Handler, consume
from snapshoe.kernel.settings import Settings
from snapshoe.payments import refunds
from snapshoe.payments.deps import Core
from snapshoe.payments.tables import inbox

REFUNDS_QUEUE = "payments.refunds"  # <namespace>.payments.refunds

HANDLERS: dict[str, Handler] = {
    OrderCancelled.routing_key(): refunds.on_order_cancelled,
    OrderRefundRequired.routing_key(): refunds.on_refund_required,
}
QUEUES = {REFUNDS_QUEUE: list(HANDLERS)}  # declared by `snapshoe migrate`


async def run_refund_consumer(settings: Settings, core: Core, stop: asyncio.Event) -> None:
    await consume(
        settings,
        core.sessions,
        inbox,
        queue=REFUNDS_QUEUE,
        handlers=HANDLERS,
        stop=stop,
    )
