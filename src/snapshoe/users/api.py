"""HTTP routes of the users service: parse, call a handler, shape the response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from snapshoe.kernel.auth import Principal, current_principal, verified_principal
from snapshoe.users import handlers
from snapshoe.users.bootstrap import Deps
from snapshoe.users.schemas import (
    Accepted,
    Cart,
    LoginRequest,
    Me,
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


def deps(request: Request) -> Deps:
    d: Deps = request.app.state.deps
    return d


def _tokens(pair: handlers.TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/api/users", status_code=202, tags=["accounts"], responses=_errors(400, 413, 422))
async def sign_up(body: SignupRequest, d: Deps = Depends(deps)) -> Accepted:
    await handlers.sign_up(d, email=body.email, password=body.password, name=body.name)
    return Accepted()


@router.post("/api/users/verification", tags=["accounts"], responses=_errors(400, 422, 429))
async def verify(body: VerificationRequest, d: Deps = Depends(deps)) -> VerificationResult:
    await handlers.verify_email(d, email=body.email, code=body.code)
    return VerificationResult()


@router.post(
    "/api/users/verification/resend",
    status_code=202,
    tags=["accounts"],
    responses=_errors(400, 422, 429),
)
async def resend(body: ResendRequest, d: Deps = Depends(deps)) -> Accepted:
    await handlers.resend_code(d, email=body.email)
    return Accepted()


@router.get("/api/users/me", tags=["accounts"], responses=_errors(401))
async def me(principal: Principal = Depends(current_principal), d: Deps = Depends(deps)) -> Me:
    user = await handlers.me(d, user_id=principal.user_id)
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        email_verified=user.email_verified,
        roles=list(user.roles),
    )


@router.post("/api/auth/login", tags=["auth"], responses=_errors(400, 401, 422))
async def login(body: LoginRequest, d: Deps = Depends(deps)) -> TokenResponse:
    return _tokens(await handlers.login(d, email=body.email, password=body.password))


@router.post("/api/auth/refresh", tags=["auth"], responses=_errors(400, 401, 422))
async def refresh(body: RefreshRequest, d: Deps = Depends(deps)) -> TokenResponse:
    return _tokens(await handlers.refresh(d, refresh_token=body.refresh_token))


@router.post("/api/auth/logout", status_code=204, tags=["auth"], responses=_errors(400, 422))
async def logout(body: RefreshRequest, d: Deps = Depends(deps)) -> Response:
    await handlers.logout(d, refresh_token=body.refresh_token)
    return Response(status_code=204)


@router.get("/api/auth/jwks", tags=["auth"])
async def jwks(d: Deps = Depends(deps)) -> dict[str, Any]:
    return d.verifier.jwks


# PLACEHOLDER until the cart issue: the route exists so the email_not_verified rule can be
# exercised end to end; it always answers an empty cart.
@router.get("/api/cart", tags=["cart"], responses=_errors(401, 403))
async def get_cart(_: Principal = Depends(verified_principal)) -> Cart:
    return Cart()
