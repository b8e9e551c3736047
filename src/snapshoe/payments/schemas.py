"""Request and response models of the payments API (docs/api.md, Payments)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# Toss Payments: orderId is 6..64 of [A-Za-z0-9_-]; a payment key is visible ASCII.
ORDER_ID_PATTERN = r"^[A-Za-z0-9_-]{6,64}$"
PAYMENT_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
MAX_AMOUNT = 1_000_000_000


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: str = Field(pattern=ORDER_ID_PATTERN)
    payment_key: str = Field(pattern=PAYMENT_KEY_PATTERN)
    # Strict: "1000", 1000.0 or true are not amounts.
    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT)


class Failure(BaseModel):
    code: str
    message: str


class PaymentOut(BaseModel):
    id: str
    order_id: str
    status: str
    amount: int
    approved_at: str | None = None
    canceled_at: str | None = None
    failure: Failure | None = None
    created_at: str | None = None


class WebhookAck(BaseModel):
    status: str
    payment_status: str | None = None
