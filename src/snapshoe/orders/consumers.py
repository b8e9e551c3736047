"""RabbitMQ consumers of the orders service: payment events -> order transitions.

Each event is applied once (the kernel's inbox, in the same transaction as the effect); each
effect is a conditional update from the expected state, so duplicates and reorderings of
different events cannot apply a transition twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundedAtPg,
)
from snapshoe.kernel.messaging import Handler, consume
from snapshoe.orders import payment_events
from snapshoe.orders.deps import Deps
from snapshoe.orders.settings import OrdersSettings
from snapshoe.orders.tables import inbox

QUEUE = "orders.payments"
ROUTING_KEYS = [
    PaymentApproved.routing_key(),
    PaymentFailed.routing_key(),
    PaymentRefunded.routing_key(),
    PaymentRefundedAtPg.routing_key(),
]
QUEUES = {QUEUE: ROUTING_KEYS}  # declared by `snapshoe migrate`, before any publisher runs


def payment_handlers(settings: OrdersSettings) -> dict[str, Handler]:
    async def approved(session: AsyncSession, body: dict[str, Any]) -> None:
        await payment_events.on_payment_approved(session, body, settings)

    return {
        PaymentApproved.routing_key(): approved,
        PaymentFailed.routing_key(): payment_events.on_payment_failed,
        PaymentRefunded.routing_key(): payment_events.on_payment_refunded,
        PaymentRefundedAtPg.routing_key(): payment_events.on_payment_refunded_at_pg,
    }


async def run_payment_consumer(deps: Deps, stop: asyncio.Event) -> None:
    await consume(
        deps.settings,
        deps.sessions,
        inbox,
        queue=QUEUE,
        handlers=payment_handlers(deps.settings),
        stop=stop,
    )
