"""The live drop view's figures of one product (``GET /api/admin/products/{id}/sales``, role
``admin``): its orders by status and how many were created in the last 10 and 60 seconds,
payments approved (orders that reached PREPARING) and declined (PAYMENT_FAILED), all from this
service's database; refusals by reason and 5xx answers from the counters ``refusals.py`` keeps
in Redis. A product nobody ordered is all zeros (no lookup at products: an unknown id too)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from snapshoe.kernel.clock import utcnow
from snapshoe.orders import refusals, schemas
from snapshoe.orders import repository as repo
from snapshoe.orders.answers import unavailable
from snapshoe.orders.domain import Status

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps


async def product_sales(deps: Deps, product_id: str) -> schemas.ProductSales:
    now = utcnow()
    windows = [now - timedelta(seconds=10), now - timedelta(seconds=60)]
    async with deps.sessions() as session:
        rows = await repo.product_sales(session, product_id, since=windows)
    try:
        counted = await refusals.read(deps.redis, deps.settings, product_id)
    except RedisError as exc:
        raise unavailable("The figures store") from exc
    return schemas.ProductSales(
        product_id=product_id,
        orders_by_status={s.value: 0 for s in Status} | {r["status"]: r["orders"] for r in rows},
        created_last_10s=sum(int(r["created_0"] or 0) for r in rows),
        created_last_60s=sum(int(r["created_1"] or 0) for r in rows),
        refusals=schemas.Refusals(**{f: counted[f] for f in refusals.REFUSALS}),
        payments=schemas.PaymentFigures(
            approved=sum(int(r["paid"] or 0) for r in rows),
            declined=sum(r["orders"] for r in rows if r["status"] == Status.PAYMENT_FAILED),
        ),
        server_errors=counted[refusals.SERVER_ERRORS],
    )
