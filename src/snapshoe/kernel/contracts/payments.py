"""Events the payments service publishes (routing key ``payment.<what>.v<version>``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from snapshoe.kernel.contracts import Event


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
