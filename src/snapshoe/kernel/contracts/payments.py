"""Events the payments service publishes (routing key ``payment.<what>.v<version>``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from snapshoe.kernel.contracts.events import Event


class PaymentApproved(Event):
    """The PG approved the charge. Published once per payment, also when the approval was found
    later by the reconciler."""

    TYPE: ClassVar[str] = "payment.approved"
    payment_id: str
    order_id: str
    buyer_id: str
    amount: int
    approved_at: datetime


class PaymentFailed(Event):
    """The PG gave a definitive no (declined, aborted). Never published for an unknown result."""

    TYPE: ClassVar[str] = "payment.failed"
    payment_id: str
    order_id: str
    buyer_id: str
    code: str
    message: str


class PaymentRefunded(Event):
    TYPE: ClassVar[str] = "payment.refunded"
    payment_id: str
    order_id: str
    buyer_id: str
    amount: int
    refunded_at: datetime


class PaymentRefundedAtPg(Event):
    """Money went back at the PG without SnapShoe asking (a dashboard refund, a chargeback, a
    partial cancel), found by the webhook or the periodic re-read of recent payments.
    ``full``: nothing is left of the charge, so the order can no longer be fulfilled; a partial
    one (``PARTIAL_CANCELED``) leaves the order paid. ``amount`` is what this notice adds,
    ``refunded_amount`` all refunded so far."""

    TYPE: ClassVar[str] = "payment.refunded_at_pg"
    payment_id: str
    order_id: str
    buyer_id: str
    amount: int
    refunded_amount: int
    balance_amount: int
    full: bool
    refunded_at: datetime
    reason: str
