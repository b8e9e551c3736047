"""The operator console (role ``admin``, checked here and again by the API): products, sizes and
drops (sale mode and times, restock), a live drop view, and orders (search, detail, refund or
cancel). Every figure comes from the public admin API, as any operator's tool would get it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from snapshoe.web.pages import Page
from snapshoe.web.store import flash_error
from snapshoe.web.views import KST

router = APIRouter(prefix="/admin", include_in_schema=False)

MODES = ("fcfs", "queue", "draw")
TIMES = ("release_at", "queue_opens_at", "entry_opens_at", "entry_closes_at", "draw_at")
ORDER_STATUSES = (
    "PENDING_PAYMENT",
    "PREPARING",
    "SHIPPING",
    "DELIVERED",
    "CANCELLED",
    "PAYMENT_FAILED",
    "EXPIRED",
)


async def admin_page(request: Request) -> Page:
    page = await Page.open(request)
    page.require_admin()
    return page


def _kst_time(value: str) -> str | None:
    """A datetime-local field (the shop's time, KST) as RFC 3339."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=KST).isoformat()
    except ValueError:
        return None


def product_body(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        k: form[k].strip() for k in ("name", "brand", "description") if form.get(k) is not None
    }
    for key in ("price", "per_user_limit", "admission_seconds"):
        if form.get(key, "").strip().isdigit():
            body[key] = int(form[key])
    if form.get("sale_mode") in MODES:
        body["sale_mode"] = form["sale_mode"]
    for key in TIMES:
        at = _kst_time(form.get(key, ""))
        if at:
            body[key] = at
    return body


@router.get("")
async def home(request: Request) -> Response:
    page = await admin_page(request)
    params = {"limit": "50"}
    if request.query_params.get("cursor"):
        params["cursor"] = request.query_params["cursor"][:200]
    listing = await page.need("GET", "/api/products", params=params)
    more = (
        f"/admin?{urlencode({'cursor': listing['next_cursor']})}"
        if listing.get("next_cursor")
        else None
    )
    ops = await page.call("GET", "/api/admin/operations")
    return await page.render(
        "console/home.html",
        products=listing["items"],
        more=more,
        operations=operations_rows(ops.body if ops.ok else None),
    )


def operations_rows(ops: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The operations panel, a row per figure: its id, what it is (an i18n key and a name),
    its value (None: unavailable) and the command that fixes it."""
    if ops is None:  # the API did not answer at all: every figure unavailable
        ops = {"outbox": {}, "dead_letters": {}, "gate_drift": {}}
    rows: list[dict[str, Any]] = []
    for service in ("orders", "products", "payments"):
        fig = ops["outbox"].get(service) or {}
        ok = fig.get("status") == "ok"
        rows.append(
            {
                "id": f"ops-outbox-{service}",
                "label": "ops_outbox",
                "name": service,
                "value": fig.get("backlog") if ok else None,
                "age": fig.get("oldest_age_seconds") if ok else None,
                "fix": fig.get("fix") or f"snapshoe worker {service}",
            }
        )
    dead = ops["dead_letters"]
    rows.append(
        {
            "id": "ops-dead-letters",
            "label": "ops_dead_letters",
            "value": dead.get("total") if dead.get("status") == "ok" else None,
            "look": dead.get("inspect") or "snapshoe events dlq list",
            "fix": dead.get("fix") or "snapshoe events dlq replay --all",
        }
    )
    for q in dead.get("queues") or []:
        if q["messages"]:
            name = q["queue"]
            rows.append(
                {
                    "id": f"ops-dlq-{name.replace('.', '-')}",
                    "label": "ops_dead_letters",
                    "name": name,
                    "value": q["messages"],
                    "fix": q["fix"],
                }
            )
    drift = ops["gate_drift"]
    rows.append(
        {
            "id": "ops-gate-drift",
            "label": "ops_gate_drift",
            "value": drift.get("items") if drift.get("status") == "ok" else None,
            "fix": drift.get("fix") or "snapshoe products reconcile",
        }
    )
    return rows


@router.get("/products/new")
async def new_product(request: Request) -> Response:
    page = await admin_page(request)
    return await page.render("console/product_form.html", product=None, error=None, modes=MODES)


@router.post("/products/new")
async def create_product(request: Request) -> Response:
    page = await admin_page(request)
    form = await page.form()
    r = await page.call("POST", "/api/admin/products", json=product_body(form))
    if r.status == 201:
        return await page.redirect(f"/admin/products/{r.body['id']}")
    return await page.render(
        "console/product_form.html",
        status=422 if r.status == 422 else 400,
        product=None,
        error=page.words(r),
        modes=MODES,
        detail=_detail(r.body),
    )


def _detail(body: Any) -> str:
    return str(body.get("detail", "")) if isinstance(body, dict) else ""


@router.get("/products/{pid}")
async def product(request: Request, pid: str) -> Response:
    page = await admin_page(request)
    item = await page.need("GET", f"/api/products/{pid}")
    return await page.render("console/product.html", product=item, error=None, modes=MODES)


@router.post("/products/{pid}")
async def edit_product(request: Request, pid: str) -> Response:
    page = await admin_page(request)
    form = await page.form()
    r = await page.call("PATCH", f"/api/admin/products/{pid}", json=product_body(form))
    if not r.ok:
        flash_error(page, r)
    return await page.redirect(f"/admin/products/{pid}")


@router.post("/products/{pid}/items")
async def add_item(request: Request, pid: str) -> Response:
    page = await admin_page(request)
    form = await page.form()
    body: dict[str, Any] = {"color": form.get("color", "").strip()}
    for key in ("size", "stock"):
        body[key] = int(form[key]) if form.get(key, "").isdigit() else -1
    r = await page.call("POST", f"/api/admin/products/{pid}/items", json=body)
    if not r.ok:
        flash_error(page, r)
    return await page.redirect(f"/admin/products/{pid}")


@router.post("/items/{iid}/restock")
async def restock(request: Request, iid: str) -> Response:
    page = await admin_page(request)
    form = await page.form()
    raw = form.get("stock_delta", "").strip()
    delta = int(raw) if raw.lstrip("-").isdigit() else 0
    r = await page.call("PATCH", f"/api/admin/items/{iid}", json={"stock_delta": delta})
    if not r.ok:
        flash_error(page, r)
    return await page.redirect(
        f"/admin/products/{form.get('product_id', '')}"
        if form.get("product_id", "").isalnum()
        else "/admin"
    )


@router.get("/products/{pid}/live")
async def live(request: Request, pid: str) -> Response:
    page = await admin_page(request)
    item = await page.need("GET", f"/api/products/{pid}")
    return await page.render("console/live.html", product=item)


@router.get("/products/{pid}/live.json")
async def live_figures(request: Request, pid: str) -> Response:
    """The live view's figures, read again every second by its script."""
    page = await admin_page(request)
    item = await page.call("GET", f"/api/products/{pid}")
    if not item.ok:
        return JSONResponse({"code": item.code}, status_code=item.status or 503)
    out: dict[str, Any] = {
        "status": item.body["status"],
        "sizes": [
            {"id": i["id"], "size": i["size"], "color": i["color"], "left": i["stock_remaining"]}
            for i in item.body["items"]
        ],
    }
    sales = await page.call("GET", f"/api/admin/products/{pid}/sales")
    out["sales"] = sales.body if sales.ok else None
    mode = item.body.get("sale_mode")
    if mode in ("queue", "draw"):
        r = await page.call("GET", f"/api/admin/products/{pid}/{mode}")
        out[mode] = r.body if r.ok else None
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@router.get("/orders")
async def orders(request: Request) -> Response:
    page = await admin_page(request)
    q = request.query_params
    params = {"limit": "30"}
    for key in ("product_id", "buyer_email", "cursor"):
        if q.get(key):
            params[key] = q[key][:254]
    if q.get("status") in ORDER_STATUSES:
        params["status"] = q["status"]
    listing = await page.need("GET", "/api/admin/orders", params=params)
    more = None
    if listing.get("next_cursor"):
        keep = {k: v for k, v in params.items() if k not in ("limit", "cursor")}
        more = "/admin/orders?" + urlencode({**keep, "cursor": listing["next_cursor"]})
    return await page.render(
        "console/orders.html",
        orders=listing["items"],
        more=more,
        filters=params,
        statuses=ORDER_STATUSES,
    )


@router.get("/orders/{oid}")
async def order(request: Request, oid: str) -> Response:
    page = await admin_page(request)
    data = await page.need("GET", f"/api/admin/orders/{oid}")
    return await page.render("console/order.html", order=data)


@router.post("/orders/{oid}/refund")
async def refund(request: Request, oid: str) -> Response:
    """Refund a paid order: it becomes CANCELLED and the payment is refunded (the API refuses
    an order that is not paid, 409 invalid_state, shown in words)."""
    page = await admin_page(request)
    await page.form()
    r = await page.call("POST", f"/api/admin/orders/{oid}/refund")
    if r.ok:
        page.flash("refunded")
    else:
        flash_error(page, r)
    return await page.redirect(f"/admin/orders/{oid}")
