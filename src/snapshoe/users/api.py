"""HTTP routes of the users service: parse, call a handler, shape the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from snapshoe.kernel.auth import Principal, current_principal, verified_principal
from snapshoe.kernel.contracts.internal_users import AccountFacts, UserRef
from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.forwarded import client_address
from snapshoe.kernel.internal import internal_caller
from snapshoe.kernel.openapi import problems
from snapshoe.users import cart, handlers, reset, sessions, verification
from snapshoe.users.consumers import CART_QUEUE
from snapshoe.users.deps import Deps
from snapshoe.users.domain import EMAIL_MAX_LENGTH, ITEM_ID_PATTERN, CartView
from snapshoe.users.repository import UserRow
from snapshoe.users.schemas import (
    Accepted,
    Cart,
    CartLine,
    CartLineRequest,
    InternalCart,
    InternalCartLine,
    LoginRequest,
    Me,
    MeUpdate,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    ResendRequest,
    SignupRequest,
    TokenResponse,
    VerificationRequest,
    VerificationResult,
)

router = APIRouter()

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: _PROBLEM for s in statuses}


async def deps(request: Request) -> Deps:
    d: Deps = request.app.state.deps
    return d


def _tokens(pair: sessions.TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post(
    "/api/users",
    status_code=202,
    tags=["accounts"],
    # 422: a weak password (domain.check_password), a bad address or name; 429: the address's
    # hourly mail budget (throttles.spend_mail_budget) or the gateway's sign-up rate.
    responses=problems(
        400,
        413,
        503,
        codes={422: ("validation_error",), 429: ("too_many_requests",)},
    ),
)
async def sign_up(body: SignupRequest, d: Deps = Depends(deps)) -> Accepted:
    await verification.sign_up(
        d, email=body.email, password=body.password, name=body.name, lang=body.lang
    )
    return Accepted()


@router.post(
    "/api/users/verification",
    tags=["accounts"],
    responses=problems(
        422,
        503,
        codes={
            400: ("verification_code_invalid", "verification_code_expired"),
            429: ("too_many_attempts", "too_many_requests"),
        },
    ),
)
async def verify(
    body: VerificationRequest, request: Request, d: Deps = Depends(deps)
) -> VerificationResult:
    await verification.verify_email(
        d, email=body.email, code=body.code, client=client_address(request)
    )
    return VerificationResult()


@router.post(
    "/api/users/verification/resend",
    status_code=202,
    tags=["accounts"],
    # 429: one code a minute per address, and the address's hourly mail budget.
    responses=problems(400, 422, 503, codes={429: ("too_many_requests",)}),
)
async def resend(body: ResendRequest, d: Deps = Depends(deps)) -> Accepted:
    await verification.resend_code(d, email=body.email)
    return Accepted()


@router.get("/api/users/me", tags=["accounts"], responses=problems(401, 503))
async def me(principal: Principal = Depends(current_principal), d: Deps = Depends(deps)) -> Me:
    return _me(await handlers.me(d, user_id=principal.user_id))


@router.patch("/api/users/me", tags=["accounts"], responses=problems(400, 401, 422, 503))
async def update_me(
    body: MeUpdate, principal: Principal = Depends(current_principal), d: Deps = Depends(deps)
) -> Me:
    """Change the account's own settings: today its mail's language (``ko`` or ``en``)."""
    return _me(await handlers.set_lang(d, user_id=principal.user_id, lang=body.lang))


def _me(user: UserRow) -> Me:
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        email_verified=user.email_verified,
        roles=list(user.roles),
        lang="en" if user.lang == "en" else "ko",
    )


@router.post(
    "/api/auth/login",
    tags=["auth"],
    responses=problems(
        400, 422, 503, codes={401: ("invalid_credentials",), 429: ("too_many_requests",)}
    ),
)
async def login(body: LoginRequest, request: Request, d: Deps = Depends(deps)) -> TokenResponse:
    pair = await sessions.login(
        d, email=body.email, password=body.password, client=client_address(request)
    )
    return _tokens(pair)


@router.post(
    "/api/auth/refresh",
    tags=["auth"],
    responses=problems(400, 422, 503, codes={401: ("invalid_token",)}),
)
async def refresh(body: RefreshRequest, d: Deps = Depends(deps)) -> TokenResponse:
    return _tokens(await sessions.refresh(d, refresh_token=body.refresh_token))


@router.post("/api/auth/logout", status_code=204, tags=["auth"], responses=problems(400, 422, 503))
async def logout(body: RefreshRequest, d: Deps = Depends(deps)) -> Response:
    await sessions.logout(d, refresh_token=body.refresh_token)
    return Response(status_code=204)


@router.post(
    "/api/auth/password-reset",
    status_code=202,
    tags=["auth"],
    # 429: one request a minute and a daily limit per address, or the gateway's rate.
    responses=problems(400, 422, 503, codes={429: ("too_many_requests",)}),
)
async def password_reset(body: PasswordResetRequest, d: Deps = Depends(deps)) -> Accepted:
    """Mail a reset code if the address has an account. The same answer either way; the code
    is stored and mailed by the users worker after the answer, so the timing says nothing."""
    await reset.request_password_reset(d, email=body.email)
    return Accepted()


@router.post(
    "/api/auth/password-reset/confirm",
    status_code=204,
    tags=["auth"],
    # 422: a weak new password; 429 too_many_attempts: 5 wrong codes kill the code.
    responses=problems(
        503,
        codes={
            400: ("reset_code_invalid", "reset_code_expired"),
            422: ("validation_error",),
            429: ("too_many_attempts", "too_many_requests"),
        },
    ),
)
async def password_reset_confirm(body: PasswordResetConfirm, d: Deps = Depends(deps)) -> Response:
    await reset.confirm_password_reset(
        d, email=body.email, code=body.code, new_password=body.new_password
    )
    return Response(status_code=204)


@router.get("/api/auth/jwks", tags=["auth"])
async def jwks(d: Deps = Depends(deps)) -> dict[str, Any]:
    return d.verifier.jwks


# Cart (a verified email is required: kernel.auth.verified_principal)

ItemIdPath = Annotated[str, Path(pattern=ITEM_ID_PATTERN, description="an item id")]


def _cart(view: CartView) -> Cart:
    return Cart(
        lines=[
            CartLine(
                item_id=line.item_id,
                quantity=line.quantity,
                product_id=line.product_id,
                product_name=line.product_name,
                size=line.size,
                color=line.color,
                unit_price=line.unit_price,
                available=line.available,
            )
            for line in view.lines
        ],
        total_amount=view.total_amount,
        degraded=view.degraded,
    )


@router.get("/api/cart", tags=["cart"], responses=problems(401, 403, 503))
async def get_cart(
    principal: Principal = Depends(verified_principal), d: Deps = Depends(deps)
) -> Cart:
    return _cart(await cart.get_cart(d, user_id=principal.user_id))


@router.put(
    "/api/cart/lines/{item_id}",
    tags=["cart"],
    # 404: an item the catalog does not know; 409 cart_full: at most CART_MAX_LINES items;
    # 503: the catalog cannot be asked (cart.set_cart_line).
    responses=problems(401, 403, 422, 503, codes={404: ("not_found",), 409: ("cart_full",)}),
)
async def put_cart_line(
    item_id: ItemIdPath,
    body: CartLineRequest,
    principal: Principal = Depends(verified_principal),
    d: Deps = Depends(deps),
) -> Cart:
    view = await cart.set_cart_line(
        d, user_id=principal.user_id, item_id=item_id, quantity=body.quantity
    )
    return _cart(view)


@router.delete("/api/cart/lines/{item_id}", tags=["cart"], responses=problems(401, 403, 422, 503))
async def delete_cart_line(
    item_id: ItemIdPath,
    principal: Principal = Depends(verified_principal),
    d: Deps = Depends(deps),
) -> Cart:
    return _cart(await cart.remove_cart_line(d, user_id=principal.user_id, item_id=item_id))


@router.delete("/api/cart", status_code=204, tags=["cart"], responses=problems(401, 403, 503))
async def clear_cart(
    principal: Principal = Depends(verified_principal), d: Deps = Depends(deps)
) -> Response:
    await cart.clear_cart(d, user_id=principal.user_id)
    return Response(status_code=204)


# Internal API (never routed by the gateway; the shared internal token is required)

internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Depends(internal_caller)]
)


@internal_router.get(
    "/users/{user_id}/account", response_model=AccountFacts, responses=_errors(403, 404, 422)
)
async def internal_account(
    user_id: Annotated[str, Path(min_length=1, max_length=64)], d: Deps = Depends(deps)
) -> AccountFacts:
    """When an account was made (products' waiting room checks a minimum account age)."""
    return await handlers.account_facts(d, user_id)


@internal_router.get("/users", response_model=UserRef, responses=_errors(403, 404, 422))
async def internal_user_of_email(
    email: Annotated[str, Query(min_length=1, max_length=EMAIL_MAX_LENGTH)],
    d: Deps = Depends(deps),
) -> UserRef:
    """The account an address belongs to (orders' admin list filters by buyer email); 404 for
    an unknown or malformed address."""
    return await handlers.user_of_email(d, email)


@internal_router.get("/carts/{user_id}", responses=_errors(403, 422))
async def internal_cart(
    user_id: Annotated[str, Path(min_length=1, max_length=32)], d: Deps = Depends(deps)
) -> InternalCart:
    """The buyer's cart lines as stored (an unknown user has an empty cart)."""
    entries = await cart.cart_entries(d, user_id=user_id)
    return InternalCart(
        lines=[InternalCartLine(item_id=e.item_id, quantity=e.quantity) for e in entries]
    )


@internal_router.post("/carts/{user_id}/orders", status_code=204, responses=_errors(403, 422))
async def internal_order_placed(
    user_id: Annotated[str, Path(min_length=1, max_length=32)],
    event: OrderPlaced,
    d: Deps = Depends(deps),
) -> Response:
    """Take an order's lines out of its buyer's cart now (orders calls this before its 201);
    the body is the ``order.placed`` event, whose later delivery is then a duplicate."""
    if event.buyer_id != user_id or not event.from_cart:
        raise Problem(422, "validation_error", detail="Not an order from this buyer's cart")
    await cart.take_ordered_lines(d, consumer=f"{d.settings.namespace}.{CART_QUEUE}", event=event)
    return Response(status_code=204)
