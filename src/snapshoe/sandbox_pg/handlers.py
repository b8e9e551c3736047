"""The sandbox PG's commands: authorize (the buyer's step), confirm, cancel, look up, billing
keys (issue, charge, look up), and the Idempotency-Key replay around the POSTs of the Toss
API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from snapshoe.kernel.errors import Problem
from snapshoe.sandbox_pg import domain
from snapshoe.sandbox_pg.deps import Deps
from snapshoe.sandbox_pg.domain import BillingKey, Outcome, Payment, Status, TossError
from snapshoe.sandbox_pg.repository import Charges, LockTimeout, StoredResponse
from snapshoe.sandbox_pg.settings import Knobs

log = logging.getLogger("snapshoe.sandbox_pg")

PAID = (Status.DONE, Status.CANCELED, Status.PARTIAL_CANCELED)


@dataclass(frozen=True, slots=True)
class Reply:
    """A Toss API answer. ``lost``: the PG did the work but the caller must not get this."""

    status: int
    body: dict[str, Any]
    lost: bool = False
    replayed: bool = False


async def knobs(deps: Deps) -> Knobs:
    return await deps.store.knobs() or deps.sandbox.default_knobs()


async def set_knobs(deps: Deps, new: Knobs | None) -> Knobs:
    await deps.store.set_knobs(new)
    return await knobs(deps)


async def simulate_latency(deps: Deps, k: Knobs) -> None:
    delay = k.latency_ms + (deps.rng.uniform(0, k.latency_jitter_ms) if k.latency_jitter_ms else 0)
    if delay > 0:
        await asyncio.sleep(delay / 1000)


def _notify(deps: Deps, payment: Payment) -> None:
    if deps.webhooks is not None:
        deps.webhooks.notify(domain.webhook_event(payment, deps.clock()))


# --- the buyer's step -------------------------------------------------------------------------


async def authorize(
    deps: Deps, order_id: str, amount: int, card_number: str, order_name: str
) -> Payment:
    """The buyer's step, for ``POST /v1/sandbox/authorizations`` and the payment window alike:
    ``card_number`` as the buyer typed it (spaces and dashes allowed). Refusals are problems:
    422 ``invalid_card_number``, 409 ``order_already_paid``."""
    card = domain.normalize_card_number(card_number)
    if card is None:
        raise Problem(422, "invalid_card_number", detail="card_number must be 12 to 19 digits")
    async with deps.store.lock(order_id):
        current = await deps.store.order_payment_key(order_id)
        if current:
            existing = await deps.store.get(current)
            if existing and existing.status in PAID:
                raise Problem(
                    409,
                    "order_already_paid",
                    detail="This order id already has a confirmed payment at the PG",
                )
        payment = domain.authorize(order_id, amount, card, order_name, deps.clock())
        await deps.store.put(payment)
        await deps.store.set_order_payment(order_id, payment.payment_key)
    return payment


async def charges(deps: Deps, order_id: str) -> Charges:
    return await deps.store.charges(order_id)


# --- the Toss API -----------------------------------------------------------------------------


async def idempotent(deps: Deps, scope: str | None, op: Callable[[], Awaitable[Reply]]) -> Reply:
    """Run ``op`` once per idempotency scope; later requests get the first answer.

    Business outcomes (2xx and 4xx) are stored; a 5xx means nothing was done, so the key is
    freed and a retry with it runs again."""
    if scope is None:
        return await _as_reply(op)
    claimed = await deps.store.claim(scope)
    if claimed is True:
        return Reply(domain.IN_FLIGHT.status, domain.IN_FLIGHT.body())
    if isinstance(claimed, StoredResponse):
        return Reply(claimed.status, claimed.body, replayed=True)
    try:
        reply = await _as_reply(op)
    except BaseException:
        await deps.store.release(scope)
        raise
    if reply.status >= 500:
        await deps.store.release(scope)
    else:
        await deps.store.finish(scope, StoredResponse(reply.status, reply.body))
    return reply


async def _as_reply(op: Callable[[], Awaitable[Reply]]) -> Reply:
    try:
        return await op()
    except TossError as exc:
        return Reply(exc.status, exc.body())
    except LockTimeout:  # nothing was changed: a 5xx, so the idempotency key is freed
        return Reply(domain.INTERNAL.status, domain.INTERNAL.body())


async def _fault(deps: Deps, k: Knobs) -> None:
    await simulate_latency(deps, k)
    if k.error_rate and deps.rng.random() < k.error_rate:
        raise domain.INTERNAL


async def confirm(deps: Deps, payment_key: str, order_id: str, amount: int) -> Reply:
    k = await knobs(deps)
    await _fault(deps, k)
    # A confirm of a payment already decided needs no lock (the common duplicate under load).
    seen = await deps.store.get(payment_key)
    if seen is not None and seen.order_id == order_id and seen.status is not Status.READY:
        domain.check_confirm(seen, order_id, amount, deps.clock(), deps.sandbox.session_ttl_seconds)
    changed: Payment | None = None
    try:
        async with deps.store.lock(order_id):
            payment = await deps.store.get(payment_key)
            if payment is None:
                raise domain.session_not_found()
            now = deps.clock()
            try:
                domain.check_confirm(
                    payment, order_id, amount, now, deps.sandbox.session_ttl_seconds
                )
            except TossError as exc:
                if exc.code == "NOT_FOUND_PAYMENT_SESSION" and payment.status is Status.READY:
                    domain.expire(payment)
                    await deps.store.put(payment)
                    changed = payment
                raise
            current = await deps.store.order_payment_key(order_id)
            if current and current != payment_key:
                other = await deps.store.get(current)
                if other and other.status in PAID:
                    raise domain.duplicated_order_id()
            outcome = domain.card_outcome(
                payment.card_number,
                decline_roll=deps.rng.random(),
                lost_roll=deps.rng.random(),
                decline_rate=k.decline_rate,
                lost_rate=k.lost_response_rate,
            )
            if outcome is Outcome.DECLINE:
                error = domain.reject_card()
                domain.decline(payment, error)
                await deps.store.put(payment)
                changed = payment
                raise error
            domain.approve(payment, now)
            await deps.store.put(payment)
            await deps.store.set_order_payment(order_id, payment_key)
            await deps.store.add_charge(order_id, payment.amount)
            changed = payment
    finally:
        if changed is not None:
            _notify(deps, changed)
    lost = outcome is Outcome.APPROVE_LOST
    if lost:
        log.info(
            "confirm approved; its response will be lost on purpose",
            extra={"order_id": order_id, "mode": k.lost_response_mode},
        )
    return Reply(200, domain.to_toss(payment), lost=lost)


async def cancel(deps: Deps, payment_key: str, reason: str, amount: int | None) -> Reply:
    k = await knobs(deps)
    await _fault(deps, k)
    payment = await deps.store.get(payment_key)
    if payment is None:
        raise domain.not_found_payment()
    async with deps.store.lock(payment.order_id):
        payment = await deps.store.get(payment_key)
        if payment is None:  # pragma: no cover - expired while we waited for the lock
            raise domain.not_found_payment()
        entry = domain.cancel(payment, reason, amount, deps.clock())
        await deps.store.put(payment)
        await deps.store.add_refund(payment.order_id, entry.amount)
    _notify(deps, payment)
    return Reply(200, domain.to_toss(payment))


async def get_by_payment_key(deps: Deps, payment_key: str) -> Reply:
    await simulate_latency(deps, await knobs(deps))
    payment = await deps.store.get(payment_key)
    if payment is None:
        raise domain.not_found_payment()
    return Reply(200, domain.to_toss(payment))


async def get_by_order_id(deps: Deps, order_id: str) -> Reply:
    await simulate_latency(deps, await knobs(deps))
    key = await deps.store.order_payment_key(order_id)
    payment = await deps.store.get(key) if key else None
    if payment is None:
        raise domain.not_found_payment()
    return Reply(200, domain.to_toss(payment))


# --- billing keys (Toss 자동결제) ---------------------------------------------------------------


async def issue_billing_key(
    deps: Deps, customer_key: str, card_number: str, year: str, month: str
) -> dict[str, Any]:
    """Register a card for ``customer_key`` (the buyer's step, like ``authorize``)."""
    await simulate_latency(deps, await knobs(deps))
    card = domain.normalize_card_number(card_number)
    if card is None:
        raise domain.invalid_card_number()
    billing = domain.issue_billing_key(
        deps.settings.pg_secret_key, customer_key, card, year, month, deps.clock()
    )
    await deps.store.put_billing(billing)
    return domain.to_toss_billing(billing)


async def get_billing_key(deps: Deps, billing_key: str) -> Reply:
    await simulate_latency(deps, await knobs(deps))
    billing = await deps.store.get_billing(billing_key)
    if billing is None:
        raise domain.not_found_billing()
    return Reply(200, domain.to_toss_billing(billing))


async def charge_billing_key(
    deps: Deps, billing_key: str, customer_key: str, order_id: str, amount: int, order_name: str
) -> Reply:
    """자동결제 승인: a new payment of ``order_id`` through the billing key. The card behaves as
    at confirm (0002 declines, 0009 is approved with the answer lost, the knobs apply); an
    order id that already has an approved payment is DUPLICATED_ORDER_ID."""
    k = await knobs(deps)
    await _fault(deps, k)
    billing = domain.check_billing(await deps.store.get_billing(billing_key), customer_key)
    changed: Payment | None = None
    try:
        async with deps.store.lock(order_id):
            await _refuse_paid_order(deps, order_id)
            now = deps.clock()
            payment = domain.billing_payment(billing, order_id, amount, order_name, now)
            outcome = _billing_outcome(deps, k, billing)
            if outcome is Outcome.DECLINE:
                error = domain.reject_card()
                domain.decline(payment, error)
                await _store_billing_payment(deps, payment)
                changed = payment
                raise error
            domain.approve(payment, now)
            await _store_billing_payment(deps, payment)
            await deps.store.add_charge(order_id, payment.amount)
            changed = payment
    finally:
        if changed is not None:
            _notify(deps, changed)
    lost = outcome is Outcome.APPROVE_LOST
    if lost:
        log.info(
            "billing charge approved; its response will be lost on purpose",
            extra={"order_id": order_id, "mode": k.lost_response_mode},
        )
    return Reply(200, domain.to_toss(payment), lost=lost)


async def _refuse_paid_order(deps: Deps, order_id: str) -> None:
    current = await deps.store.order_payment_key(order_id)
    other = await deps.store.get(current) if current else None
    if other is not None and other.status in PAID:
        raise domain.duplicated_order_id()


def _billing_outcome(deps: Deps, k: Knobs, billing: BillingKey) -> Outcome:
    return domain.card_outcome(
        billing.card_number,
        decline_roll=deps.rng.random(),
        lost_roll=deps.rng.random(),
        decline_rate=k.decline_rate,
        lost_rate=k.lost_response_rate,
    )


async def _store_billing_payment(deps: Deps, payment: Payment) -> None:
    """The payment, and the order's index to it (``GET /v1/payments/orders/{orderId}``)."""
    await deps.store.put(payment)
    await deps.store.set_order_payment(payment.order_id, payment.payment_key)
