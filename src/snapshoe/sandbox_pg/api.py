"""HTTP routes of the sandbox PG.

- The Toss Payments API (``/v1/payments/...``): HTTP Basic secret-key auth, Toss-shaped
  bodies and errors ``{code, message}``, ``Idempotency-Key`` on POSTs.
- The Toss billing API (``/v1/billing/...``, 자동결제): the card registration that issues a
  billing key is the buyer's step here (no auth, like the sandbox authorization); the charge
  through a billing key and its look-up (a sandbox addition) need the secret key.
- The sandbox's own endpoints (``/v1/sandbox/...``): the buyer's authorization step (no auth,
  like a browser checkout) and, behind the secret key, the knobs and per-order charge counts.
  These answer problem+json, like every SnapShoe service.
- The payment window (``/v1/sandbox/checkout``, 결제창): an HTML page and its form, the same
  authorization behind a browser redirect (``checkout.py``, ``pages.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from snapshoe.kernel.errors import Problem
from snapshoe.sandbox_pg import checkout, domain, handlers, pages
from snapshoe.sandbox_pg.deps import Deps
from snapshoe.sandbox_pg.domain import TossError
from snapshoe.sandbox_pg.handlers import Reply
from snapshoe.sandbox_pg.repository import idempotency_scope
from snapshoe.sandbox_pg.schemas import (
    AuthorizationRequest,
    AuthorizationResponse,
    BillingAuthorizationBody,
    BillingChargeBody,
    CancelBody,
    ChargesResponse,
    ConfirmBody,
)
from snapshoe.sandbox_pg.settings import Knobs, LostResponseMode

log = logging.getLogger("snapshoe.sandbox_pg")

MAX_IDEMPOTENCY_KEY = 300
Body = TypeVar("Body", bound=BaseModel)


async def get_deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(get_deps)]


def _secret_ok(deps: Deps, authorization: str | None) -> bool:
    if not authorization or not authorization.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = (deps.settings.pg_secret_key + ":").encode()
    return hmac.compare_digest(decoded, expected)


async def toss_auth(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    if not _secret_ok(await get_deps(request), authorization):
        raise domain.UNAUTHORIZED


async def sandbox_auth(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    if not _secret_ok(await get_deps(request), authorization):
        raise Problem(
            401,
            "unauthorized",
            detail="Use the PG secret key: Authorization: Basic base64(secret_key + ':')",
            headers={"WWW-Authenticate": 'Basic realm="sandbox-pg"'},
        )


async def parse(request: Request, model: type[Body]) -> Body:
    """A Toss body, or 400 INVALID_REQUEST naming what is wrong."""
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise domain.invalid_request("요청 본문이 올바른 JSON이 아닙니다.") from None
    if not isinstance(data, dict):
        raise domain.invalid_request("요청 본문은 JSON 객체여야 합니다.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise domain.invalid_request(f"잘못된 요청입니다: {field}: {err.get('msg', '')}") from None


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY:
        raise domain.invalid_request("Idempotency-Key는 1자 이상 300자 이하여야 합니다.")
    return value


class ResponseLost(Exception):
    """Raised after a partial response on purpose: the server then cuts the connection."""


class LostResponse(Response):
    """The PG did the work; the caller never gets a whole answer.

    ``drop``: the status line, headers and half the body are sent, then the connection is cut
    (uvicorn closes the socket when the app fails after the response started): an HTTP client
    sees a transport error at once (aiohttp: ``ClientPayloadError``, the body cut short).
    ``hang``: nothing is sent for ``hang_seconds`` (a client with a shorter timeout sees a
    read timeout), then the connection is cut as in ``drop``.
    """

    def __init__(self, body: dict[str, Any], mode: LostResponseMode, hang_seconds: float) -> None:
        super().__init__(orjson.dumps(body), status_code=200, media_type="application/json")
        self.mode = mode
        self.hang_seconds = hang_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mode == "hang" and self.hang_seconds > 0:
            await asyncio.sleep(self.hang_seconds)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = bytes(self.body)
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        raise ResponseLost


class DropLostResponseLogs(logging.Filter):
    """uvicorn and the kernel log a traceback for every app error; a planned lost response
    is not one (handlers.confirm logs it at info)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ResponseLost)


def render(reply: Reply) -> Response:
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
    return Response(
        orjson.dumps(reply.body),
        status_code=reply.status,
        media_type="application/json",
        headers=headers,
    )


toss = APIRouter(
    prefix="/v1/payments", tags=["Toss Payments API"], dependencies=[Depends(toss_auth)]
)


@toss.post("/confirm", summary="결제 승인 (confirm a payment)")
async def confirm(
    request: Request,
    deps: DepsDep,
    idem: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    key = idempotency_key(idem)
    body = await parse(request, ConfirmBody)
    if not domain.valid_order_id(body.order_id):
        raise domain.invalid_request(
            "주문번호(orderId)는 6자 이상 64자 이하의 영문, 숫자, -, _ 입니다."
        )
    scope = (
        idempotency_scope(deps.settings.pg_secret_key, "POST", "/v1/payments/confirm", key)
        if key
        else None
    )
    reply = await handlers.idempotent(
        deps, scope, lambda: handlers.confirm(deps, body.payment_key, body.order_id, body.amount)
    )
    return await render_approval(deps, reply)


async def render_approval(deps: Deps, reply: Reply) -> Response:
    """An approval whose answer is to be lost is lost (a replay of it is delivered)."""
    if reply.lost and not reply.replayed:
        k = await handlers.knobs(deps)
        return LostResponse(reply.body, k.lost_response_mode, k.hang_seconds)
    return render(reply)


@toss.post("/{payment_key}/cancel", summary="결제 취소 (cancel / refund a payment)")
async def cancel(
    payment_key: str,
    request: Request,
    deps: DepsDep,
    idem: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    key = idempotency_key(idem)
    body = await parse(request, CancelBody)
    path = f"/v1/payments/{payment_key}/cancel"
    scope = idempotency_scope(deps.settings.pg_secret_key, "POST", path, key) if key else None
    reply = await handlers.idempotent(
        deps,
        scope,
        lambda: handlers.cancel(deps, payment_key, body.cancel_reason, body.cancel_amount),
    )
    return render(reply)


@toss.get("/orders/{order_id}", summary="orderId로 결제 조회 (payment by order id)")
async def by_order_id(order_id: str, deps: DepsDep) -> Response:
    return render(await handlers.get_by_order_id(deps, order_id))


@toss.get("/{payment_key}", summary="paymentKey로 결제 조회 (payment by payment key)")
async def by_payment_key(payment_key: str, deps: DepsDep) -> Response:
    return render(await handlers.get_by_payment_key(deps, payment_key))


billing = APIRouter(prefix="/v1/billing", tags=["Toss Payments billing API"])


@billing.post("/authorizations/card", summary="카드 자동결제 빌링키 발급 (issue a billing key)")
async def issue_billing_key(request: Request, deps: DepsDep) -> Response:
    """The buyer registers a card (in dev and tests through the gateway, with no secret key, like
    ``/v1/sandbox/authorizations``; Toss itself takes this call server-side). No
    Idempotency-Key: without a secret key there is no one to scope it to."""
    body = await parse(request, BillingAuthorizationBody)
    issued = await handlers.issue_billing_key(
        deps,
        body.customer_key,
        body.card_number,
        body.card_expiration_year,
        body.card_expiration_month,
    )
    return render(Reply(200, issued))


# ``:path``: a billing key is one opaque value, whatever it holds (a percent-encoded "/" arrives
# decoded); the card registration above is matched first.
@billing.post(
    "/{billing_key:path}",
    summary="카드 자동결제 승인 (charge a billing key)",
    dependencies=[Depends(toss_auth)],
)
async def charge_billing_key(
    billing_key: str,
    request: Request,
    deps: DepsDep,
    idem: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    key = idempotency_key(idem)
    body = await parse(request, BillingChargeBody)
    if not domain.valid_order_id(body.order_id):
        raise domain.invalid_request(
            "주문번호(orderId)는 6자 이상 64자 이하의 영문, 숫자, -, _ 입니다."
        )
    path = f"/v1/billing/{billing_key}"
    scope = idempotency_scope(deps.settings.pg_secret_key, "POST", path, key) if key else None
    reply = await handlers.idempotent(
        deps,
        scope,
        lambda: handlers.charge_billing_key(
            deps, billing_key, body.customer_key, body.order_id, body.amount, body.order_name
        ),
    )
    return await render_approval(deps, reply)


@billing.get(
    "/{billing_key:path}",
    summary="빌링키 조회 (sandbox addition: the billing key as issued)",
    dependencies=[Depends(toss_auth)],
)
async def get_billing_key(billing_key: str, deps: DepsDep) -> Response:
    return render(await handlers.get_billing_key(deps, billing_key))


sandbox = APIRouter(prefix="/v1/sandbox", tags=["sandbox"])


@sandbox.post("/authorizations", response_model=AuthorizationResponse)
async def authorize(body: AuthorizationRequest, deps: DepsDep) -> AuthorizationResponse:
    """The buyer's step at the PG (in production: Toss's payment window). Gives the
    ``payment_key`` the client then confirms through SnapShoe. Card numbers: ending 0000
    approves, 0002 declines, 0009 approves but the confirm response is lost."""
    payment = await handlers.authorize(
        deps, body.order_id, body.amount, body.card_number, body.order_name
    )
    return AuthorizationResponse(
        payment_key=payment.payment_key,
        order_id=payment.order_id,
        amount=payment.amount,
        status=payment.status.value,
    )


@sandbox.get("/checkout", response_class=HTMLResponse, summary="결제창 (the payment window)")
async def checkout_page(request: Request, deps: DepsDep) -> Response:
    """The page a store sends its buyer to (Toss's 결제창): query ``orderId``, ``amount``,
    ``orderName``, ``successUrl``, ``failUrl``. Bad parameters are a 400 page."""
    try:
        values = checkout.single_values(request.query_params.multi_items())
        window = checkout.read_window(values)
    except checkout.WindowError as exc:
        return pages.error_page(exc)
    return pages.window_page(window, checkout.sign(deps.settings.pg_secret_key, window))


@sandbox.post("/checkout", response_class=HTMLResponse, summary="결제창의 결제 (the window's form)")
async def checkout_pay(request: Request, deps: DepsDep) -> Response:
    """The window's form: authorizes as ``POST /v1/sandbox/authorizations`` does, then 303 to
    successUrl (``paymentKey``, ``orderId``, ``amount``) or failUrl (``code``, ``message``,
    ``orderId``). A form whose signed fields were changed is a 400 page."""
    try:
        values = checkout.decode_form(await request.body())
        window = checkout.read_form(deps.settings.pg_secret_key, values)
    except checkout.WindowError as exc:
        return pages.error_page(exc)
    if values.get("action") == "cancel":
        return pages.redirect(checkout.cancel(window))
    return pages.redirect(await checkout.pay(deps, window, values.get("cardNumber", "")))


@sandbox.get(
    "/orders/{order_id}/charges",
    response_model=ChargesResponse,
    dependencies=[Depends(sandbox_auth)],
)
async def order_charges(order_id: str, deps: DepsDep) -> ChargesResponse:
    """How many times this order was charged (approved) and refunded at the PG."""
    c = await handlers.charges(deps, order_id)
    return ChargesResponse(
        order_id=c.order_id,
        charges=c.charges,
        charged_amount=c.charged_amount,
        refunds=c.refunds,
        refunded_amount=c.refunded_amount,
    )


@sandbox.get("/config", response_model=Knobs, dependencies=[Depends(sandbox_auth)])
async def get_config(deps: DepsDep) -> Knobs:
    return await handlers.knobs(deps)


@sandbox.put("/config", response_model=Knobs, dependencies=[Depends(sandbox_auth)])
async def put_config(body: Knobs, deps: DepsDep) -> Knobs:
    """Replace the knobs (a field left out takes its startup default)."""
    knobs = deps.sandbox.default_knobs().model_copy(update=body.model_dump(exclude_unset=True))
    return await handlers.set_knobs(deps, knobs)


@sandbox.delete("/config", response_model=Knobs, dependencies=[Depends(sandbox_auth)])
async def reset_config(deps: DepsDep) -> Knobs:
    """Back to the startup defaults (``SNAPSHOE_SANDBOX_PG_*``)."""
    return await handlers.set_knobs(deps, None)


def toss_error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, TossError)
    return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json")
