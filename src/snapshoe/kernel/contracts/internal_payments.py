"""The payments service's internal API (``/internal/...``, called by the products service's
draw worker): check a billing key, charge an order through one. One model each, used by the
server (validation, ``response_model``) and by ``kernel.clients.payments``.

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

# Toss's rules: an order id is 6..64 of [A-Za-z0-9_-]; a customerKey 2..300 of letters,
# digits and - _ = . @ (SnapShoe's is the buyer's user id); a billing key visible ASCII.
OrderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{6,64}$")]
CustomerKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-_=.@]{2,300}$")]
BillingKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
MAX_ORDER_NAME = 100  # Toss's orderName limit
OrderName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ORDER_NAME, strip_whitespace=True)
]

# DONE: charged (the order becomes PREPARING); FAILED: declined, nothing charged (the order
# becomes PAYMENT_FAILED); UNKNOWN: the PG's answer was lost, the reconciler resolves it;
# IN_PROGRESS: a charge is under way (another call's); CANCELED: charged, then refunded.
ChargeStatus = Literal["DONE", "FAILED", "UNKNOWN", "IN_PROGRESS", "CANCELED"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BillingKeyVerifyIn(_In):
    """``POST /internal/billing-keys/verify``."""

    billing_key: BillingKey
    customer_key: CustomerKey


class BillingKeyOut(BaseModel):
    """The card behind a billing key: ``card_number`` masked as the PG shows it,
    ``card_fingerprint`` the same for the same card whoever registered it."""

    billing_key: str
    card_number: str
    card_fingerprint: str


class ChargeIn(_In):
    """``POST /internal/charges``: charge the order's total through the billing key. Idempotent
    by ``order_id``: one charge per order, ever."""

    order_id: OrderId
    billing_key: BillingKey
    customer_key: CustomerKey
    order_name: OrderName


class ChargeOut(BaseModel):
    payment_id: str
    order_id: str
    status: ChargeStatus
    pg_code: str | None = None
