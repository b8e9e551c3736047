"""The drop pages beyond a plain purchase: the waiting room (take a ticket, follow it live over
SSE relayed from the API, buy when admitted) and draws (enter with a card, see the commitment,
the result and the revealed seed). docs/web.md."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from snapshoe.web.pages import Page
from snapshoe.web.store import flash_error

router = APIRouter(include_in_schema=False)


@router.post("/products/{pid}/queue")
async def join(request: Request, pid: str) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    await page.form()
    r = await page.call("POST", f"/api/products/{pid}/queue")
    if r.status not in (200, 201):
        flash_error(page, r)
    return await page.redirect(f"/products/{pid}")


@router.get("/products/{pid}/queue/me.json")
async def ticket(request: Request, pid: str) -> Response:
    """The ticket, for a page that cannot hold a stream (and after the stream ends)."""
    page = await Page.open(request)
    r = await page.call("GET", f"/api/products/{pid}/queue/me")
    return JSONResponse(
        r.body if r.ok else {"code": r.code},
        status_code=r.status or 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/products/{pid}/queue/events")
async def events(request: Request, pid: str) -> Response:
    """The API's ticket stream, relayed as it comes (the browser holds no token to open it
    itself). One upstream stream per open page; it ends when the ticket is final."""
    page = await Page.open(request)
    token = await page.token()
    if token is None:
        return JSONResponse({"code": "unauthorized"}, status_code=401)
    api, ip = page.deps.api, page.client_ip

    async def relay() -> AsyncIterator[bytes]:
        async with api.stream(
            f"/api/products/{pid}/queue/me/events", token=token, client_ip=ip
        ) as upstream:
            if upstream.status != 200:
                yield b"event: gone\ndata: {}\n\n"
                return
            async for chunk in upstream.content.iter_any():
                yield chunk

    response = StreamingResponse(
        relay(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    return await page.finish(response)


@router.post("/products/{pid}/entries")
async def enter(request: Request, pid: str) -> Response:
    """A draw entry: the card becomes a billing key at the PG (charged only on a win), then the
    entry. In production the card form is the PG's own window, as for checkout (docs/web.md)."""
    page = await Page.open(request)
    page.require_sign_in()
    form = await page.form()
    user = page.session.user or {}
    card = {
        "customerKey": str(user.get("id", "")),
        "cardNumber": form.get("card_number", "").replace(" ", "").replace("-", "")[:19],
        "cardExpirationYear": form.get("expiry_year", "")[:2],
        "cardExpirationMonth": form.get("expiry_month", "")[:2],
    }
    key = await page.call("POST", "/pg/v1/billing/authorizations/card", json=card)
    if not key.ok or not isinstance(key.body, dict) or "billingKey" not in key.body:
        page.flash("err_billing_key_invalid")
        return await page.redirect(f"/products/{pid}")
    body = {"item_id": form.get("item_id", ""), "billing_key": key.body["billingKey"]}
    r = await page.call("POST", f"/api/products/{pid}/entries", json=body)
    if r.status not in (200, 201):
        flash_error(page, r)
    return await page.redirect(f"/products/{pid}")


@router.post("/products/{pid}/entries/withdraw")
async def withdraw(request: Request, pid: str) -> Response:
    page = await Page.open(request)
    page.require_sign_in()
    await page.form()
    r = await page.call("DELETE", f"/api/products/{pid}/entries/me")
    if r.status != 204:
        flash_error(page, r)
    return await page.redirect(f"/products/{pid}")
