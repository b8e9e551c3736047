"""The operator's glance (``GET /api/admin/operations``, role ``admin``), each figure with the
command that fixes it: every service's outbox backlog (this one's from its own database,
products' and payments' from their ``GET /internal/operations``; users publishes no events),
every consumer queue's dead letters (from the broker), and products' stock gate drift.

One gateway path, so orders answers for all; a service, or the broker, that does not answer in
:data:`FIGURE_SECONDS` shows as ``unavailable`` for its figures and the rest is still given."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clients.payments import PaymentsClient
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.deadletters import PLATFORM_QUEUES, dlq_depths, full_queue_name
from snapshoe.kernel.outbox import backlog
from snapshoe.orders import schemas
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from snapshoe.orders.deps import Deps

log = logging.getLogger("snapshoe.orders")

FIGURE_SECONDS = 3.0
DLQ_INSPECT = "snapshoe events dlq list"
DLQ_FIX = "snapshoe events dlq replay --all"
GATE_FIX = "snapshoe products reconcile"


def outbox_fix(service: str) -> str:
    """The service's worker runs its relay, which publishes the backlog."""
    return f"snapshoe worker {service}"


async def operations(deps: Deps) -> schemas.Operations:
    own, products, payments, dead = await asyncio.gather(
        _own_outbox(deps),
        _ask(deps.products),
        _ask(deps.payments),
        _dead_letters(deps),
    )
    drift = products.gate_drift if products is not None else None
    return schemas.Operations(
        outbox={
            "orders": own,
            "products": _outbox_figure("products", products),
            "payments": _outbox_figure("payments", payments),
        },
        dead_letters=dead,
        gate_drift=(
            schemas.GateDriftFigure(status="unavailable", fix=GATE_FIX)
            if drift is None
            else schemas.GateDriftFigure(status="ok", fix=GATE_FIX, **drift.model_dump())
        ),
    )


async def _own_outbox(deps: Deps) -> schemas.OutboxFigure:
    try:
        async with asyncio.timeout(FIGURE_SECONDS):
            figures = await backlog(deps.sessions, outbox)
    except Exception as exc:
        log.warning("orders' outbox backlog not read: %r", exc)
        return schemas.OutboxFigure(status="unavailable", fix=outbox_fix("orders"))
    return schemas.OutboxFigure(status="ok", fix=outbox_fix("orders"), **figures.model_dump())


async def _ask(client: ProductsClient | PaymentsClient) -> ServiceOperations | None:
    try:
        async with asyncio.timeout(FIGURE_SECONDS):
            return await client.operations()
    except (UpstreamProblem, UpstreamUnavailable, TimeoutError) as exc:
        log.warning("operations figures of %s not read: %r", client.base_url, exc)
        return None


def _outbox_figure(service: str, answer: ServiceOperations | None) -> schemas.OutboxFigure:
    if answer is None:
        return schemas.OutboxFigure(status="unavailable", fix=outbox_fix(service))
    return schemas.OutboxFigure(status="ok", fix=outbox_fix(service), **answer.outbox.model_dump())


async def _dead_letters(deps: Deps) -> schemas.DeadLetterFigures:
    try:
        async with asyncio.timeout(FIGURE_SECONDS):
            depths = await dlq_depths(deps.settings, PLATFORM_QUEUES)
    except Exception as exc:
        log.warning("DLQ depths not read: %r", exc)
        return schemas.DeadLetterFigures(status="unavailable", inspect=DLQ_INSPECT, fix=DLQ_FIX)
    queues = []
    for short in PLATFORM_QUEUES:
        messages = depths.get(f"{full_queue_name(deps.settings, short)}.dlq")
        if messages is not None:  # a queue never declared has dead-lettered nothing
            fix = f"snapshoe events dlq replay --queue {short} --all"
            queues.append(schemas.DeadLetterQueue(queue=short, messages=messages, fix=fix))
    return schemas.DeadLetterFigures(
        status="ok",
        total=sum(q.messages for q in queues),
        queues=queues,
        inspect=DLQ_INSPECT,
        fix=DLQ_FIX,
    )
