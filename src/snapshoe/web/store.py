"""The store's buyer pages: the catalog, a product, the cart, checkout through the PG's payment
window, order history and an order's timeline. Each calls the public API (pages.Page.call)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from snapshoe.web.i18n import ERROR_KEYS, LANGS
from snapshoe.web.pages import Page, PageProblem, local_path
from snapshoe.web.sessions import LANG_COOKIE
from snapshoe.web.upstream import Answer

router = APIRouter(include_in_schema=False)

STATUSES = ("upcoming", "live", "sold_out")
SETTLE_POLLS = 30
SETTLE_POLL_SECONDS = 0.1
# What an order shows as its progress (준비중 -> 배송중 -> 배송완료).
TIMELINE = ("PENDING_PAYMENT", "PREPARING", "SHIPPING", "DELIVERED")


def flash_error(page: Page, answer: Answer) -> None:
    """The API's refusal, in words, on the next page."""
    page.flash(f"err_{answer.code}" if answer.code in ERROR_KEYS else "error_generic")


@router.get("/")
async def catalog(request: Request) -> Response:
    page = await Page.open(request)
    q = request.query_params
    params = {"limit": "12"}
    for key in ("q", "brand", "cursor"):
        if q.get(key):
            params[key] = q[key][:100]
    if q.get("status") in STATUSES:
        params["status"] = q["status"]
    listing = await page.need("GET", "/api/products", params=params)
    brands = await _brands(page)
    more = None
    if listing.get("next_cursor"):
        more = "/?" + urlencode(
            {**{k: v for k, v in params.items() if k != "limit"}, "cursor": listing["next_cursor"]}
        )
    return await page.render(
        "store/catalog.html",
        products=listing["items"],
        brands=brands,
        query=q.get("q", ""),
        brand=q.get("brand", ""),
        status_filter=params.get("status", ""),
        more=more,
    )


async def _brands(page: Page) -> list[str]:
    """The brands of the catalog's first hundred products (the filter's choices)."""
    r = await page.call("GET", "/api/products", params={"limit": "100"})
    items = r.body.get("items", []) if r.ok else []
    return sorted({str(p["brand"]) for p in items})


@router.get("/products/{pid}")
async def product(request: Request, pid: str) -> Response:
    page = await Page.open(request)
    item = await page.need("GET", f"/api/products/{pid}")
    extra: dict[str, Any] = {}
    if page.session.signed_in and item.get("sale_mode") == "queue":
        r = await page.call("GET", f"/api/products/{pid}/queue/me")
        extra["ticket"] = r.body if r.ok else None
    if item.get("sale_mode") == "draw":
        r = await page.call("GET", f"/api/products/{pid}/draw")
        extra["draw"] = r.body if r.ok else None
        if page.session.signed_in:
            e = await page.call("GET", f"/api/products/{pid}/entries/me")
            extra["entry"] = e.body if e.ok else None
    return await page.render("store/product.html", product=item, **extra)


@router.get("/products/{pid}/stock.json")
async def stock(request: Request, pid: str) -> Response:
    """Pairs left per size, for the product page's live figures."""
    page = await Page.open(request)
    r = await page.call("GET", f"/api/products/{pid}")
    if not r.ok:
        return JSONResponse({"code": r.code}, status_code=r.status or 503)
    items = [{"id": i["id"], "left": i["stock_remaining"]} for i in r.body["items"]]
    return JSONResponse(
        {"status": r.body["status"], "items": items}, headers={"Cache-Control": "no-store"}
    )


@router.post("/products/{pid}/buy")
async def buy(request: Request, pid: str) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    form = await page.form()
    headers = {"Idempotency-Key": f"web-{form.get('intent', '')[:64]}"}
    r = await page.call("GET", f"/api/products/{pid}/queue/me")
    if r.ok and r.body.get("admission_token"):
        headers["Admission-Token"] = r.body["admission_token"]
    body = {"lines": [{"item_id": form.get("item_id", ""), "quantity": 1}]}
    placed = await page.call("POST", "/api/orders", json=body, headers=headers)
    if placed.status == 201:
        return await page.redirect(f"/orders/{placed.body['id']}/pay")
    if placed.status == 401:
        page.require_sign_in()
    flash_error(page, placed)
    return await page.redirect(f"/products/{pid}")


@router.get("/cart")
async def cart(request: Request) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    lines = await page.need("GET", "/api/cart")
    return await page.render("store/cart.html", cart=lines)


@router.post("/cart/add")
async def cart_add(request: Request) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    form = await page.form()
    qty = form.get("quantity", "1")
    item = form.get("item_id", "")
    r = await page.call(
        "PUT", f"/api/cart/lines/{item}", json={"quantity": int(qty) if qty.isdigit() else 0}
    )
    if not r.ok:
        flash_error(page, r)
        return await page.redirect(local_path(form.get("back"), "/cart"))
    return await page.redirect("/cart")


@router.post("/cart/remove")
async def cart_remove(request: Request) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    form = await page.form()
    await page.need("DELETE", f"/api/cart/lines/{form.get('item_id', '')}")
    return await page.redirect("/cart")


@router.post("/cart/checkout")
async def cart_checkout(request: Request) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    form = await page.form()
    headers = {"Idempotency-Key": f"web-{form.get('intent', '')[:64]}"}
    r = await page.call("POST", "/api/orders", json={"from_cart": True}, headers=headers)
    if r.status == 201:
        return await page.redirect(f"/orders/{r.body['id']}/pay")
    flash_error(page, r)
    return await page.redirect("/cart")


@router.get("/orders")
async def orders(request: Request) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    params = {"limit": "20"}
    if request.query_params.get("cursor"):
        params["cursor"] = request.query_params["cursor"][:200]
    listing = await page.need("GET", "/api/orders", params=params)
    more = (
        f"/orders?{urlencode({'cursor': listing['next_cursor']})}"
        if listing.get("next_cursor")
        else None
    )
    return await page.render("store/orders.html", orders=listing["items"], more=more)


@router.get("/orders/{oid}")
async def order(request: Request, oid: str) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    data = await page.need("GET", f"/api/orders/{oid}")
    reached = {h["status"]: h["at"] for h in data.get("history", [])}
    return await page.render("store/order.html", order=data, timeline=TIMELINE, reached=reached)


@router.post("/orders/{oid}/cancel")
async def cancel(request: Request, oid: str) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    await page.form()
    r = await page.call("POST", f"/api/orders/{oid}/cancel")
    if r.ok:
        page.flash("cancelled")
    else:
        flash_error(page, r)
    return await page.redirect(f"/orders/{oid}")


@router.get("/orders/{oid}/pay")
async def pay(request: Request, oid: str) -> Response:
    """To the PG's payment window, which comes back to /paid or /pay-failed (Toss's flow)."""
    page = await Page.open(request)
    page.require_sign_in()
    data = await page.need("GET", f"/api/orders/{oid}")
    if data["status"] != "PENDING_PAYMENT":
        raise PageProblem(409, "invalid_state", back=f"/orders/{oid}")
    names = [line["product_name"] for line in data["lines"]]
    origin = page.origin()
    query = urlencode(
        {
            "orderId": oid,
            "amount": data["total_amount"],
            "orderName": names[0] + (f" +{len(names) - 1}" if len(names) > 1 else ""),
            "successUrl": f"{origin}/orders/{oid}/paid",
            "failUrl": f"{origin}/orders/{oid}/pay-failed",
        }
    )
    return await page.redirect(f"{page.deps.settings.pg_checkout_path}?{query}")


@router.get("/orders/{oid}/paid")
async def paid(request: Request, oid: str) -> Response:
    """The PG window's success redirect: SnapShoe confirms the payment, then the order shows."""
    page = await Page.open(request)
    page.require_sign_in()
    q = request.query_params
    key = q.get("paymentKey", "")[:200]
    amount = q.get("amount", "")
    if q.get("orderId") != oid or not key or not amount.isdigit():
        raise PageProblem(400, "validation_error", back=f"/orders/{oid}")
    idem = "web-pay-" + hashlib.sha256(key.encode()).hexdigest()[:40]
    r = await page.call(
        "POST",
        "/api/payments/confirm",
        json={"order_id": oid, "payment_key": key, "amount": int(amount)},
        headers={"Idempotency-Key": idem},
    )
    if r.status == 200:
        page.flash("paid")
        await _settled(page, oid)
    elif r.status == 202:
        page.flash("payment_unknown")
    else:
        flash_error(page, r)
        if r.status == 402:  # declined: the order turns PAYMENT_FAILED the same way
            await _settled(page, oid)
    return await page.redirect(f"/orders/{oid}")


async def _settled(page: Page, oid: str) -> None:
    """The order turns PREPARING when orders has the payment's event, a moment after the
    confirm: wait for it briefly so the page the buyer lands on does not still say unpaid."""
    for _ in range(SETTLE_POLLS):
        r = await page.call("GET", f"/api/orders/{oid}")
        if not r.ok or r.body.get("status") != "PENDING_PAYMENT":
            return
        await asyncio.sleep(SETTLE_POLL_SECONDS)


@router.get("/orders/{oid}/pay-failed")
async def pay_failed(request: Request, oid: str) -> Response:
    page = await Page.open(request)
    page.flash("payment_failed_text")
    return await page.redirect(f"/orders/{oid}")


@router.get("/lang/{lang}")
async def switch_lang(request: Request, lang: str) -> Response:
    page = await Page.open(request)
    if lang in LANGS and page.session.signed_in:
        # The mails follow the buyer's choice too; the page works even if this call fails.
        await page.call("PATCH", "/api/users/me", json={"lang": lang})
    response = await page.redirect(local_path(request.query_params.get("next")))
    if lang in LANGS:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 24 * 3600,
            samesite="lax",
            secure=page.deps.settings.cookie_secure,
            httponly=True,
        )
    return response
