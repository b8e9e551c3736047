"""Payment rules: statuses, ids, the PG idempotency keys derived from our ids, backoff.
Pure: no I/O."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from snapshoe.kernel.clock import as_utc
from snapshoe.kernel.contracts.internal_payments import ChargeStatus


class Status(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"  # the confirm is being sent to the PG
    DONE = "DONE"  # the PG approved: money taken
    ABORTED = "ABORTED"  # the PG definitively refused: nothing taken
    UNKNOWN = "UNKNOWN"  # no definitive answer; the reconciler asks the PG
    CANCELED = "CANCELED"  # approved, then fully refunded


class Method(StrEnum):
    """How a payment is charged: ``confirm`` (the buyer authorized at the PG and gave us the
    payment key) or ``billing`` (we charge a billing key: a draw's winner). A billing payment's
    payment key is made by the PG with the charge, so it is empty until the PG's answer (or
    the reconciler's look-up by order id) tells it."""

    CONFIRM = "confirm"
    BILLING = "billing"


# What the internal charge answers for each payment status (the draw worker's view).
CHARGE_STATUS: dict[Status, ChargeStatus] = {
    Status.IN_PROGRESS: "IN_PROGRESS",
    Status.DONE: "DONE",
    Status.ABORTED: "FAILED",
    Status.UNKNOWN: "UNKNOWN",
    Status.CANCELED: "CANCELED",
}


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


# Order statuses that mean "paid and being (or been) fulfilled": the sweeper never refunds a
# payment whose order is in one of these with this payment's id.
FULFILLED_ORDER_STATUSES = frozenset({"PREPARING", "SHIPPING", "DELIVERED"})
# Order statuses that can never be fulfilled any more: a charge for such an order is refunded.
UNFULFILLABLE_ORDER_STATUSES = frozenset({"EXPIRED", "CANCELLED", "PAYMENT_FAILED"})


def sweep_verdict(order: dict[str, object] | None, payment_id: str) -> str:
    """What the sweeper does with a DONE payment given its order (None: orders has no such
    order): "fulfilled" (never look again), "refund", or "wait" (still PENDING_PAYMENT: the
    approval is on its way, or the order is about to expire)."""
    if order is None:
        return "refund"
    status = order.get("status")
    if status in FULFILLED_ORDER_STATUSES:
        # Paid by another payment (cannot happen with one payment per order, but then this
        # one is money without an order).
        return "fulfilled" if order.get("payment_id") == payment_id else "refund"
    if status in UNFULFILLABLE_ORDER_STATUSES:
        return "refund"
    return "wait"


# Payments whose outcome is not known yet: only these may move to DONE or ABORTED.
UNRESOLVED: tuple[Status, ...] = (Status.IN_PROGRESS, Status.UNKNOWN)

PAYABLE_ORDER_STATUS = "PENDING_PAYMENT"

# A confirm still IN_PROGRESS this long after the PG timeout is assumed lost (the process died
# mid-call) and handed to the reconciler.
STALE_IN_PROGRESS_GRACE = timedelta(seconds=5)
FIRST_CHECK_DELAY = timedelta(seconds=1)
MAX_BACKOFF_SECONDS = 300.0
CLAIM_LEASE = timedelta(seconds=30)


def new_payment_id() -> str:
    # Unguessable: a payment id in a URL grants nothing, but must not be enumerable.
    return "pay_" + secrets.token_urlsafe(16)


def new_refund_id() -> str:
    return "rf_" + secrets.token_urlsafe(16)


def confirm_idempotency_key(payment_id: str) -> str:
    """The PG Idempotency-Key of a payment's confirm: every retry (the handler's, the
    reconciler's) sends the same key, so the PG can never charge twice."""
    return f"snapshoe-confirm-{payment_id}"


def billing_idempotency_key(payment_id: str) -> str:
    """The PG Idempotency-Key of a billing payment's charge: the internal call, its retries
    and the reconciler's re-send all use it, so the PG charges the billing key at most once."""
    return f"snapshoe-billing-{payment_id}"


def refund_idempotency_key(refund_id: str) -> str:
    return f"snapshoe-refund-{refund_id}"


def backoff(attempts: int) -> timedelta:
    """Wait before asking the PG again after ``attempts`` inconclusive tries: 1, 2, 4 ... 300 s."""
    exponent = min(max(attempts - 1, 0), 16)  # 2**16 s is past the cap already; no overflow
    return timedelta(seconds=min(2.0**exponent, MAX_BACKOFF_SECONDS))


def rfc3339(value: datetime | None) -> str | None:
    """The payments API's timestamps: always with microseconds (``...T00:00:00.000000Z``),
    which :func:`snapshoe.kernel.clock.rfc3339` drops when they are zero (as the PG's are)."""
    if value is None:
        return None
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    order_id: str
    buyer_id: str
    payment_key: str
    amount: int
    status: Status
    pg_code: str | None
    pg_message: str | None
    approved_at: datetime | None
    canceled_at: datetime | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    refunded_amount: int = 0
    method: Method = Method.CONFIRM
    billing_key: str | None = None
    order_name: str | None = None

    @property
    def key_known(self) -> bool:
        """Whether the PG's payment key is known (a billing payment's is not until answered)."""
        return bool(self.payment_key)

    def matches(self, payment_key: str, order_id: str, amount: int) -> bool:
        """Whether a payment the PG shows is this one: the same key; for a billing payment whose
        key is not known yet, the same order id and amount (order ids are ours and unique)."""
        if order_id != self.order_id:
            return False
        if self.key_known:
            return payment_key == self.payment_key
        return self.method is Method.BILLING and amount == self.amount

    def view(self) -> dict[str, object]:
        """The public representation (docs/api.md)."""
        return {
            "id": self.id,
            "order_id": self.order_id,
            "status": self.status.value,
            "amount": self.amount,
            "approved_at": rfc3339(self.approved_at),
            "canceled_at": rfc3339(self.canceled_at),
            "failure": (
                {"code": self.pg_code, "message": self.pg_message or ""}
                if self.status is Status.ABORTED and self.pg_code
                else None
            ),
            "created_at": rfc3339(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    payment_id: str
    order_id: str
    amount: int
    reason: str
    status: RefundStatus
    attempts: int
