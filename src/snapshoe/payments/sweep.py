"""The sweeper: no charge without an order (item 12 of issue 12)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import utcnow
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    Status,
    new_refund_id,
    sweep_verdict,
)

if TYPE_CHECKING:
    from snapshoe.kernel.contracts.internal_orders import InternalOrder
    from snapshoe.payments.deps import Core, Orders

log = logging.getLogger("snapshoe.payments")


async def sweep(core: Core, orders: Orders) -> int:
    """Refund every DONE payment whose order can no longer be fulfilled (EXPIRED, CANCELLED,
    PAYMENT_FAILED, paid by another payment, or unknown to orders), approved over
    ``refund_sweep_grace_seconds`` ago. Returns how many refunds it asked for.

    It only records the refund (one per payment: UNIQUE(payment_id)); the refund worker cancels
    at the PG under the refund's Idempotency-Key, so sweepers running at once refund once."""
    s = core.settings
    now = utcnow()
    async with core.sessions.begin() as session:
        ids = await repo.sweep_candidates(
            session, now - timedelta(seconds=s.refund_sweep_grace_seconds), s.refund_sweep_batch
        )
    asked = 0
    for payment_id in ids:
        async with core.sessions.begin() as session:
            p = await repo.get(session, payment_id)
        if p is None or p.status is not Status.DONE:
            continue
        try:
            order: InternalOrder | None = await orders.get_order(p.order_id)
        except UpstreamProblem as exc:
            if exc.status != 404:
                log.warning("sweeper: orders answered %s for %s", exc.status, p.order_id)
                continue
            order = None
        except UpstreamUnavailable as exc:
            log.info("sweeper: orders unavailable (%s); next pass", exc)
            return asked
        # The rule is pure (payments/domain.py) and reads the order's fields by name.
        verdict = sweep_verdict(None if order is None else order.model_dump(), p.id)
        async with core.sessions.begin() as session:
            if verdict == "refund":
                status = "unknown" if order is None else order.status.lower()
                reason = f"sweeper: order {status}"
                if await repo.insert_refund_once(
                    session, refund_id=new_refund_id(), payment=p, reason=reason, now=utcnow()
                ):
                    asked += 1
                    log.warning("sweeper: refunding payment %s (%s)", p.id, reason)
            await repo.mark_order_checked(session, p.id, utcnow(), fulfilled=verdict == "fulfilled")
    return asked
