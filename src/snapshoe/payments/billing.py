"""Billing keys (a draw's charges), for the products service's draw worker through
``/internal``: check that a billing key is the buyer's card, and charge an order through it.

The charge follows confirm's rules: the order is read from orders (the buyer must be the billing
key's customer, the order payable; the amount is the order's total, never the caller's); the
payment row is written first (UNIQUE(order_id): a second call for the order gets that payment
and never a second charge); the PG's Idempotency-Key is derived from the payment id; the
outcome goes through the shared approve / fail / mark-unknown paths, so the same
``PaymentApproved`` / ``PaymentFailed`` events move the order. A lost answer is resolved by the
reconciler (``handlers.reconcile``): by order id at the PG, else the same charge again under
the same key.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.internal_payments import BillingKeyOut, ChargeOut
from snapshoe.kernel.errors import Problem, not_found, service_unavailable
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    CHARGE_STATUS,
    STALE_IN_PROGRESS_GRACE,
    Method,
    Payment,
    new_payment_id,
)
from snapshoe.payments.handlers import (
    invalid_state,
    payable_order,
    send_confirm,
)
from snapshoe.payments.pg import PgAuthError, PgDeclined, PgError, PgNotFound

if TYPE_CHECKING:
    from snapshoe.payments.deps import Core, Deps

log = logging.getLogger("snapshoe.payments")


def billing_key_invalid() -> Problem:
    return Problem(
        422,
        "billing_key_invalid",
        detail="The PG knows no such billing key for this customer",
    )


def fallback_fingerprint(card_number: str) -> str:
    """A PG that gives no card fingerprint (Toss itself): the masked number stands in for the
    card. Coarser (two cards with the same visible digits share it), never finer."""
    return "masked-" + hashlib.sha256(card_number.encode()).hexdigest()


async def verify(core: Core, billing_key: str, customer_key: str) -> BillingKeyOut:
    """The billing key's card if the PG issued it to ``customer_key``; 422
    ``billing_key_invalid`` if not (unknown, or another customer's); 503 if the PG cannot say."""
    try:
        found = await core.pg.get_billing_key(billing_key)
    except (PgNotFound, PgDeclined):
        raise billing_key_invalid() from None
    except PgAuthError:
        log.error("the PG refused our secret key; check SNAPSHOE_PG_SECRET_KEY")
        raise service_unavailable("Payments are unavailable", retry_after=None) from None
    except PgError as exc:
        log.info("billing key check: the PG could not be read (%s)", exc)
        raise service_unavailable("The PG cannot be reached now; try again") from None
    if found.billing_key != billing_key or found.customer_key != customer_key:
        raise billing_key_invalid()
    return BillingKeyOut(
        billing_key=found.billing_key,
        card_number=found.card_number,
        card_fingerprint=found.fingerprint or fallback_fingerprint(found.card_number),
    )


def charge_out(p: Payment) -> ChargeOut:
    return ChargeOut(
        payment_id=p.id,
        order_id=p.order_id,
        status=CHARGE_STATUS[p.status],
        pg_code=p.pg_code,
    )


async def charge(
    deps: Deps, *, order_id: str, billing_key: str, customer_key: str, order_name: str
) -> Payment:
    """Charge ``order_id``'s total through ``billing_key`` once; any later call for the order
    answers the payment's current state (DONE, ABORTED, UNKNOWN, IN_PROGRESS, CANCELED)."""
    async with deps.sessions.begin() as session:
        existing = await repo.by_order(session, order_id)
    if existing is not None:
        return _existing(existing, billing_key, customer_key)
    order = await payable_order(deps, order_id, customer_key)
    now = utcnow()
    payment_id = new_payment_id()
    stale_at = now + timedelta(seconds=deps.settings.pg_timeout_seconds) + STALE_IN_PROGRESS_GRACE
    try:
        async with deps.sessions.begin() as session:
            await repo.insert_in_progress(
                session,
                payment_id=payment_id,
                order_id=order_id,
                buyer_id=customer_key,
                payment_key="",
                amount=order.total_amount,
                now=now,
                check_at=stale_at,
                method=Method.BILLING,
                billing_key=billing_key,
                order_name=order_name,
            )
    except IntegrityError:
        # A concurrent charge (or confirm) of this order inserted first (UNIQUE(order_id)).
        async with deps.sessions.begin() as session:
            existing = await repo.by_order(session, order_id)
        if existing is None:
            raise
        return _existing(existing, billing_key, customer_key)
    async with deps.sessions.begin() as session:
        payment = await repo.reread(session, payment_id)
    return await send_confirm(deps, payment)


def _existing(p: Payment, billing_key: str, customer_key: str) -> Payment:
    """This order already has a payment: the same charge again gets it; anything else (another
    buyer, another card, a confirm of the buyer's own) can never be a second charge."""
    if p.buyer_id != customer_key:
        raise not_found("order")
    if p.method is not Method.BILLING or p.billing_key != billing_key:
        raise invalid_state("This order already has a payment")
    return p
