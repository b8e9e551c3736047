"""Request and response models of the accounts API (docs/api.md, "Accounts").

Requests are strict (no type coercion: ``"email": 1`` is a 422, not ``"1"``). Signup applies
the password policy of :mod:`snapshoe.users.domain` (``password_problem``, through
``NewPassword``: every request that sets a password uses that type); login does not (an old
password that predates a policy change must still work) and only bounds the length.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from snapshoe.users.domain import (
    CART_MAX_QUANTITY,
    DEFAULT_LANG,
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    Lang,
    check_name,
    check_password,
    normalize_email,
)

Email = Annotated[
    str, StringConstraints(max_length=EMAIL_MAX_LENGTH), AfterValidator(normalize_email)
]
NewPassword = Annotated[
    str, StringConstraints(max_length=PASSWORD_MAX_LENGTH), AfterValidator(check_password)
]
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(check_name)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
RefreshToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class SignupRequest(_Request):
    email: Email
    password: NewPassword
    name: Name
    # The language of the account's mail (an addition: optional, Korean when absent).
    lang: Lang = DEFAULT_LANG

    @field_validator("password")
    @classmethod
    def _not_the_address(cls, password: str, info: ValidationInfo) -> str:
        # Fields validate in order: the normalized email is known here unless it was invalid.
        return check_password(password, info.data.get("email"))


class VerificationRequest(_Request):
    email: Email
    code: Code


class ResendRequest(_Request):
    email: Email


class PasswordResetRequest(_Request):
    email: Email


class PasswordResetConfirm(_Request):
    email: Email
    code: Code
    # The sign-up policy (domain.check_password), so a stronger one applies here as well.
    new_password: NewPassword


class LoginRequest(_Request):
    # Not validated as an address: a malformed one is just an unknown one (401, not 422).
    email: Annotated[str, StringConstraints(min_length=1, max_length=EMAIL_MAX_LENGTH)]
    password: AnyPassword


class RefreshRequest(_Request):
    refresh_token: RefreshToken


class Accepted(BaseModel):
    """The one body of every 202 of signup, resend and password reset, whatever the address."""

    status: Literal["accepted"] = "accepted"
    detail: str = "If this address can receive mail, a message is on its way."


class VerificationResult(BaseModel):
    email_verified: Literal[True] = True


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a token type, not a secret)
    expires_in: int


class Me(BaseModel):
    id: str
    email: str
    name: str
    email_verified: bool
    roles: list[str]
    lang: Lang


class MeUpdate(_Request):
    """``PATCH /api/users/me``: what an account may change of itself (its mail's language)."""

    lang: Lang


class CartLineRequest(_Request):
    quantity: Annotated[int, Field(ge=1, le=CART_MAX_QUANTITY)]


class CartLine(BaseModel):
    """A cart line. The product fields are null when products could not be asked (the cart
    is then ``degraded``) or no longer knows the item (``available`` is then false)."""

    item_id: str
    quantity: int
    product_id: str | None
    product_name: str | None
    size: int | None
    color: str | None
    unit_price: int | None
    available: bool | None


class Cart(BaseModel):
    lines: list[CartLine] = Field(default_factory=list)
    # null only when degraded: without prices there is no honest total.
    total_amount: int | None = 0
    # True when products could not be reached: lines are listed without their details.
    degraded: bool = False


class InternalCartLine(BaseModel):
    item_id: str
    quantity: int


class InternalCart(BaseModel):
    lines: list[InternalCartLine]
