"""Request and response bodies of the sandbox PG (its own endpoints: docs/api.md, Operations;
the Toss API shape: docs/payments-pg.md).

The Toss API bodies (camelCase) are parsed by hand in ``api.py`` so that bad input gets a
Toss-style ``{code, message}``; the sandbox's own endpoints use problem+json like every
SnapShoe service.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from snapshoe.sandbox_pg.domain import CUSTOMER_KEY_PATTERN, MAX_AMOUNT, MAX_REASON


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


class ConfirmBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    payment_key: str = Field(alias="paymentKey", min_length=1, max_length=200)
    order_id: str = Field(alias="orderId", min_length=1, max_length=64)
    amount: int = Field(gt=0, le=MAX_AMOUNT)

    _amount = field_validator("amount", mode="before")(_no_bool)


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    cancel_reason: str = Field(alias="cancelReason", min_length=1, max_length=MAX_REASON)
    cancel_amount: int | None = Field(default=None, alias="cancelAmount", gt=0, le=MAX_AMOUNT)

    _amount = field_validator("cancel_amount", mode="before")(_no_bool)


class BillingAuthorizationBody(BaseModel):
    """``POST /v1/billing/authorizations/card`` (Toss 카드 자동결제 빌링키 발급). Toss takes the
    card fields as strings; the number is checked in the handler (INVALID_CARD_NUMBER)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    customer_key: str = Field(alias="customerKey", pattern=CUSTOMER_KEY_PATTERN)
    card_number: str = Field(alias="cardNumber", min_length=1, max_length=32)
    card_expiration_year: str = Field(alias="cardExpirationYear", pattern=r"^[0-9]{2}$")
    card_expiration_month: str = Field(alias="cardExpirationMonth", pattern=r"^(0[1-9]|1[0-2])$")
    # The first two digits of the card's password, and the owner's birth date (YYMMDD) or
    # business number: optional, as in a Toss contract without them; checked for shape only.
    card_password: str | None = Field(default=None, alias="cardPassword", pattern=r"^[0-9]{2}$")
    customer_identity_number: str | None = Field(
        default=None, alias="customerIdentityNumber", pattern=r"^([0-9]{6}|[0-9]{10})$"
    )


class BillingChargeBody(BaseModel):
    """``POST /v1/billing/{billingKey}`` (Toss 카드 자동결제 승인). Toss's optional fields
    (customerEmail, customerName, taxFreeAmount, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    customer_key: str = Field(alias="customerKey", pattern=CUSTOMER_KEY_PATTERN)
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    order_id: str = Field(alias="orderId", min_length=1, max_length=64)
    order_name: str = Field(alias="orderName", min_length=1, max_length=100)

    _amount = field_validator("amount", mode="before")(_no_bool)


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(pattern=r"^[A-Za-z0-9_-]{6,64}$", examples=["ord_8f3a9c2e1b"])
    amount: int = Field(gt=0, le=MAX_AMOUNT, strict=True, examples=[189000])
    card_number: str = Field(min_length=12, max_length=32, examples=["4330123412340000"])
    order_name: str = Field(default="SnapShoe order", min_length=1, max_length=100)


class AuthorizationResponse(BaseModel):
    payment_key: str
    order_id: str
    amount: int
    status: str


class ChargesResponse(BaseModel):
    order_id: str
    charges: int
    charged_amount: int
    refunds: int
    refunded_amount: int
