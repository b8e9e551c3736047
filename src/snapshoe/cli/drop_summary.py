"""``snapshoe products summary PRODUCT_ID``: a drop's figures after (or during) the sale, from
the admin API: the product (sale mode, pairs left per size), its sales figures (orders by
status, payments, refusals by reason), the waiting room's or the draw's figures, and every
order of it page by page (pairs sold and held, refunds, when the last pair went)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from snapshoe.cli.apps import products_app
from snapshoe.cli.common import JsonOption, admin_call, emit_json, print_table, progress

if TYPE_CHECKING:
    from snapshoe.cli.admin_client import AdminClient

# Orders whose pairs are sold (paid, not cancelled), and those holding pairs unpaid.
SOLD = ("PREPARING", "SHIPPING", "DELIVERED")
HELD = ("PENDING_PAYMENT",)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _pairs(product: dict[str, Any], orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: pairs sold and held by the orders, left on sale (the gate's live count)."""
    sizes = {
        i["id"]: {
            "item_id": i["id"],
            "size": i["size"],
            "color": i["color"],
            "sold": 0,
            "held": 0,
            "left": i["stock_remaining"],
        }
        for i in product["items"]
    }
    for order in orders:
        kind = "sold" if order["status"] in SOLD else "held" if order["status"] in HELD else None
        for line in order["lines"]:
            if kind is not None and line["item_id"] in sizes:
                sizes[line["item_id"]][kind] += line["quantity"]
    for size in sizes.values():
        size["total"] = size["sold"] + size["held"] + size["left"]
    return list(sizes.values())


def _sold_out(product: dict[str, Any], left: int, orders: list[dict[str, Any]]) -> dict[str, Any]:
    """When the last pair still sold or held was taken, and how long after the sale opened
    (a draw: after ``draw_at``); both None while pairs are left."""
    taking = [_time(o["created_at"]) for o in orders if o["status"] in SOLD + HELD]
    if left > 0 or not taking:
        return {"sold_out_at": None, "sold_out_after_seconds": None}
    opened = _time(product.get("draw_at") or product["release_at"])
    last = max(taking)
    return {
        "sold_out_at": last.isoformat(),
        "sold_out_after_seconds": round(max(0.0, (last - opened).total_seconds()), 3),
    }


def summarize(
    product: dict[str, Any],
    sales: dict[str, Any],
    orders: list[dict[str, Any]],
    mode_figures: dict[str, Any] | None,
) -> dict[str, Any]:
    sizes = _pairs(product, orders)
    pairs = {k: sum(s[k] for s in sizes) for k in ("total", "sold", "held", "left")}
    mode = product["sale_mode"]
    return {
        "product_id": product["id"],
        "name": product["name"],
        "sale_mode": mode,
        "status": product["status"],
        "release_at": product["release_at"],
        "pairs": pairs,
        "sizes": sizes,
        "orders": len(orders),
        "orders_by_status": sales["orders_by_status"],
        "payments": {
            **sales["payments"],
            "refunded": sum(1 for o in orders if o.get("refunded_at")),
        },
        "refusals": sales["refusals"],
        "server_errors": sales["server_errors"],
        "queue": mode_figures if mode == "queue" else None,
        "draw": mode_figures if mode == "draw" else None,
        **_sold_out(product, pairs["left"], orders),
    }


async def _gather(admin: AdminClient, product_id: str) -> dict[str, Any]:
    product = await admin.get(f"/api/products/{product_id}")
    sales = await admin.get(f"/api/admin/products/{product_id}/sales")
    mode = product["sale_mode"]
    figures = None
    if mode in ("queue", "draw"):
        figures = await admin.get(f"/api/admin/products/{product_id}/{mode}")
    expected = sum(sales["orders_by_status"].values())
    with progress() as bar:
        task = bar.add_task("reading orders", total=expected)
        orders, _ = await admin.orders(
            {"product_id": product_id}, on_page=lambda n: bar.advance(task, n)
        )
    return summarize(product, sales, orders, figures)


def _show(summary: dict[str, Any]) -> None:
    s = summary
    after = s["sold_out_after_seconds"]
    head = [
        ["sale mode", s["sale_mode"]],
        ["status", s["status"]],
        ["opens", s["release_at"]],
        ["pairs total / sold / held / left", " / ".join(str(v) for v in s["pairs"].values())],
        ["orders", s["orders"]],
        ["sold out after (s)", "not sold out" if after is None else after],
    ]
    print_table(f"drop {s['name']} ({s['product_id']})", ("", ""), head, header=False)
    columns = ("size", "color", "total", "sold", "held", "left")
    print_table("pairs per size", columns, [[z[c] for c in columns] for z in s["sizes"]])
    print_table("orders by status", ("status", "orders"), s["orders_by_status"].items())
    print_table("payments", ("result", "orders"), s["payments"].items())
    refusals = [*s["refusals"].items(), ("server errors (5xx)", s["server_errors"])]
    print_table("refusals by reason", ("reason", "answers"), refusals)
    for mode in ("queue", "draw"):
        if s[mode]:
            shown = [(k, v) for k, v in s[mode].items() if not isinstance(v, list | dict)]
            print_table(f"{mode} figures", ("figure", "value"), shown)


@products_app.command("summary")
def products_summary(product_id: str, as_json: JsonOption = False) -> None:
    """A drop's summary: sale mode, pairs total/sold/held/left, orders by status, payments
    approved/declined/refunded, refusals by reason, queue or draw figures, time to sell out."""
    summary = admin_call(lambda a: _gather(a, product_id))
    if as_json:
        emit_json(summary)
    else:
        _show(summary)
    if summary["orders"] != sum(summary["orders_by_status"].values()):
        typer.echo("note: orders were placed while this was read; figures may differ", err=True)
