"""Operator commands on orders and events, through the admin API (admin_client.py):
``snapshoe orders find``, ``snapshoe orders refund`` and ``snapshoe events outbox``.
Business rules stay in the services: these commands ask and show, the services decide."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from snapshoe.cli.apps import events_app, orders_app
from snapshoe.cli.common import JsonOption, admin_call, emit_json, print_table, progress

if TYPE_CHECKING:
    from snapshoe.cli.admin_client import AdminClient

ORDER_STATUSES = (
    "PENDING_PAYMENT",
    "PREPARING",
    "SHIPPING",
    "DELIVERED",
    "CANCELLED",
    "PAYMENT_FAILED",
    "EXPIRED",
)
# Services whose outbox a relay publishes (users publishes no events).
OUTBOX_SERVICES = ("orders", "products", "payments")


def lines_text(order: dict[str, Any]) -> str:
    return ", ".join(
        f"{ln['product_name']} {ln['size']} {ln['color']} x{ln['quantity']}"
        for ln in order.get("lines", [])
    )


def _order_rows(orders: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            o["id"],
            o["status"],
            o["buyer_id"],
            lines_text(o),
            o["total_amount"],
            o["created_at"],
            o["paid_at"],
            o["refunded_at"],
        ]
        for o in orders
    ]


ORDER_COLUMNS = ("order", "status", "buyer", "lines", "total", "created", "paid", "refunded")


def _show_order(order: dict[str, Any]) -> None:
    print_table(f"order {order['id']}", ORDER_COLUMNS, _order_rows([order]))
    typer.echo(f"payment: {order.get('payment_id') or '-'}")
    history = [[h["status"], h.get("reason"), h["at"]] for h in order.get("history", [])]
    print_table("history", ("status", "reason", "at"), history)


async def _find(
    admin: AdminClient, params: dict[str, Any], limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    if limit <= 100:  # one page
        return await admin.orders(params, limit)
    with progress() as bar:
        task = bar.add_task("reading orders", total=limit)
        return await admin.orders(params, limit, on_page=lambda n: bar.advance(task, n))


@orders_app.command("find")
def orders_find(
    status: Annotated[str | None, typer.Option(help=f"one of {', '.join(ORDER_STATUSES)}")] = None,
    product: Annotated[str | None, typer.Option("--product", help="a product id")] = None,
    email: Annotated[str | None, typer.Option("--email", help="the buyer's email")] = None,
    order_id: Annotated[
        str | None, typer.Option("--id", help="one order, with its history and payment")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="most orders shown, newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Find orders by status, product and buyer email (combined), or one by its id."""
    if order_id is not None:
        if status or product or email:
            raise typer.BadParameter("--id finds one order: give no other filter with it")
        order = admin_call(lambda a: a.get(f"/api/admin/orders/{order_id}"))
        if as_json:
            emit_json(order)
        else:
            _show_order(order)
        return
    if status is not None and status.upper() not in ORDER_STATUSES:
        raise typer.BadParameter(f"--status: one of {', '.join(ORDER_STATUSES)}")
    params = {"status": status.upper() if status else None, "product_id": product}
    params["buyer_email"] = email
    orders, rest = admin_call(lambda a: _find(a, params, limit))
    if as_json:
        emit_json({"items": orders, "next_cursor": rest})
        return
    print_table(f"{len(orders)} order(s)", ORDER_COLUMNS, _order_rows(orders))
    if rest is not None:
        typer.echo(f"more orders match: --limit {limit * 2} shows more")


async def _refund(admin: AdminClient, order_id: str, wait: float) -> dict[str, Any]:
    """Ask the refund; with ``wait`` > 0, follow the order until payments has refunded it at
    the PG (``refunded_at`` set), at most ``wait`` seconds."""
    order: dict[str, Any] = await admin.post(f"/api/admin/orders/{order_id}/refund")
    if wait <= 0:
        return order
    from rich.console import Console

    deadline = time.monotonic() + wait
    with Console(stderr=True).status("waiting for the PG refund..."):
        while order.get("refunded_at") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            order = await admin.get(f"/api/admin/orders/{order_id}")
    return order


@orders_app.command("refund")
def orders_refund(
    order_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask to confirm")] = False,
    wait: Annotated[
        float, typer.Option(help="seconds to wait for the PG's refund (0: do not wait)")
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Refund a paid order (PREPARING): it is cancelled, its pairs go back on sale and payments
    refunds the payment at the PG. Exit 1 if refused, or not refunded within --wait."""
    from snapshoe.cli.admin_client import AdminApiError

    if not yes:
        order = admin_call(lambda a: a.get(f"/api/admin/orders/{order_id}"))
        _show_order(order)
        typer.confirm(f"Refund order {order_id}?", abort=True, err=True)

    async def work(admin: AdminClient) -> dict[str, Any]:
        try:
            return await _refund(admin, order_id, wait)
        except AdminApiError as exc:
            if exc.code == "invalid_state":
                now = exc.body.get("status_now")
                raise AdminApiError(exc.status, exc.code, f"not refundable: it is {now}") from exc
            raise

    refunded = admin_call(work)
    done = refunded.get("refunded_at") is not None
    if as_json:
        emit_json(refunded)
    else:
        typer.echo(f"order {order_id}: {refunded['status']}, its pairs back on sale")
        if done:
            typer.echo(f"refunded at the PG at {refunded['refunded_at']}")
    if wait > 0 and not done:
        typer.echo(
            f"the PG refund is not confirmed after {wait:g}s: payments keeps trying "
            f"(snapshoe orders find --id {order_id} shows when it is)",
            err=True,
        )
        raise typer.Exit(1)


_UNROUTABLE = re.compile(r'^snapshoe_outbox_unroutable_events\{service="(\w+)"\} (\S+)$', re.M)


def _unroutable(text: str | None) -> dict[str, int]:
    return {m[1]: int(float(m[2])) for m in _UNROUTABLE.finditer(text or "")}


async def _outbox(admin: AdminClient) -> dict[str, Any]:
    ops = await admin.get("/api/admin/operations")
    texts = await asyncio.gather(*(admin.metrics(s) for s in OUTBOX_SERVICES))
    outbox: dict[str, Any] = {}
    for service, text in zip(OUTBOX_SERVICES, texts, strict=True):
        figure = dict(ops["outbox"].get(service) or {"status": "unavailable"})
        # Not in the admin API: read from the service's own /metrics (None: not answered).
        figure["unroutable"] = _unroutable(text).get(service) if text is not None else None
        outbox[service] = figure
    return {"outbox": outbox, "dead_letters": ops["dead_letters"]}


@events_app.command("outbox")
def events_outbox(as_json: JsonOption = False) -> None:
    """Outbox status per service: events not yet published, the oldest one's wait, those the
    broker returned as unroutable; and the dead-letter total."""
    status = admin_call(_outbox)
    if as_json:
        emit_json(status)
        return
    rows = [
        [s, f["status"], f.get("backlog"), f.get("oldest_age_seconds"), f["unroutable"], f["fix"]]
        for s, f in status["outbox"].items()
    ]
    columns = ("service", "status", "backlog", "oldest age (s)", "unroutable", "fix")
    print_table("outbox", columns, rows)
    dead = status["dead_letters"]
    typer.echo(f"dead letters: {dead.get('total')} (inspect: {dead['inspect']})")
