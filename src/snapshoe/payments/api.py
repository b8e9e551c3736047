"""HTTP routes of the payments service: parse, call a handler, shape the response.

``/internal/...`` is for the products service's draw worker (billing keys): never routed by the
gateway, and guarded by the shared internal token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from snapshoe.kernel.auth import Principal, verified_principal
from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.contracts.internal_payments import (
    BillingKeyOut,
    BillingKeyVerifyIn,
    ChargeIn,
    ChargeOut,
)
from snapshoe.kernel.errors import PROBLEM_JSON, not_found
from snapshoe.kernel.idempotency import require_key
from snapshoe.kernel.internal import internal_caller
from snapshoe.kernel.openapi import IDEMPOTENCY_KEY, problems
from snapshoe.payments import billing, handlers, operations
from snapshoe.payments.deps import Deps
from snapshoe.payments.schemas import ConfirmRequest, PaymentOut, WebhookAck

router = APIRouter(tags=["payments"])
internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
MAX_ID = 64


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: _PROBLEM for s in statuses}


async def deps(request: Request) -> Deps:
    d: Deps = request.app.state.deps
    return d


@router.post(
    "/api/payments/confirm",
    response_model=PaymentOut,
    responses={
        202: {"model": PaymentOut, "description": "The PG's answer is not known yet"},
        **problems(
            401,
            403,
            404,
            422,
            503,
            codes={
                400: ("amount_mismatch",),
                402: ("payment_declined",),
                409: ("invalid_state",),
            },
        ),
    },
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def confirm(
    body: ConfirmRequest,
    request: Request,
    principal: Principal = Depends(verified_principal),
    d: Deps = Depends(deps),
) -> Response:
    key = await require_key(request)
    status, out = await handlers.confirm(
        d,
        buyer_id=principal.user_id,
        idempotency_key=key,
        order_id=body.order_id,
        payment_key=body.payment_key,
        amount=body.amount,
    )
    # A replayed answer may be a stored problem.
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(orjson.dumps(out), status_code=status, media_type=media)


@router.get("/api/payments/{payment_id}", responses=problems(401, 403, 404, 503))
async def get_payment(
    payment_id: str,
    principal: Principal = Depends(verified_principal),
    d: Deps = Depends(deps),
) -> PaymentOut:
    if len(payment_id) > MAX_ID:
        raise not_found("payment")
    p = await handlers.get_payment(d, buyer_id=principal.user_id, payment_id=payment_id)
    return PaymentOut.model_validate(p.view())


@router.post(
    "/api/payments/webhooks/pg",
    responses=problems(413, 503, codes={400: ("invalid_webhook",)}),
)
async def pg_webhook(request: Request, d: Deps = Depends(deps)) -> WebhookAck:
    """Unauthenticated like Toss webhooks: the body only says which payment to re-read."""
    return WebhookAck.model_validate(await handlers.webhook(d, await request.body()))


@internal_router.post(
    "/billing-keys/verify", response_model=BillingKeyOut, responses=_errors(403, 422, 503)
)
async def verify_billing_key(body: BillingKeyVerifyIn, d: Deps = Depends(deps)) -> BillingKeyOut:
    """The card behind a billing key, if the PG issued it to this customer (422
    ``billing_key_invalid`` if not; 503 when the PG cannot be reached)."""
    return await billing.verify(d, body.billing_key, body.customer_key)


@internal_router.post(
    "/charges", response_model=ChargeOut, responses=_errors(403, 404, 409, 422, 503)
)
async def charge(body: ChargeIn, d: Deps = Depends(deps)) -> ChargeOut:
    """Charge the order's total through the billing key, once per order ever (a later call
    answers the same payment). DONE / FAILED / UNKNOWN / IN_PROGRESS / CANCELED."""
    p = await billing.charge(
        d,
        order_id=body.order_id,
        billing_key=body.billing_key,
        customer_key=body.customer_key,
        order_name=body.order_name,
    )
    return billing.charge_out(p)


@internal_router.get("/operations", response_model=ServiceOperations)
async def operator_figures(d: Deps = Depends(deps)) -> ServiceOperations:
    """Its outbox backlog, for orders' GET /api/admin/operations."""
    return await operations.operations(d)
