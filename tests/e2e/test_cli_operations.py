"""The operator's commands during and after a drop, run as an operator runs them (``python -m
snapshoe.cli ...`` in the test namespace) against the test platform: find orders, refund one
(the order is cancelled and the sandbox PG holds the refund), outbox status, gate vs ledger
drift and its repair, and a drop's summary whose figures are exactly what the test did."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from tests.integration.orders.helpers import Buyer, OrdersEnv, assert_problem, pay
from tests.support.platform import DATA_DIR, ROOT, TEST_ENV, Platform
from tests.support.waiting import eventually

DECLINE = "4111111111110002"


@pytest.fixture(scope="module")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", *args],
        env={**os.environ, **TEST_ENV, "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def cli_json(*args: str) -> Any:
    out = cli(*args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


async def _charges(env: OrdersEnv, order_id: str) -> dict[str, Any]:
    """What the sandbox PG holds for an order (charges, refunds, refunded amount)."""
    secret = base64.b64encode(f"{env.settings.pg_secret_key}:".encode()).decode()
    async with httpx.AsyncClient(
        base_url=env.platform.url("sandbox_pg"),
        headers={"Authorization": f"Basic {secret}"},
        timeout=15,
    ) as pg:
        r = await pg.get(f"/v1/sandbox/orders/{order_id}/charges")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


async def _paid(
    env: OrdersEnv, c: httpx.AsyncClient, buyer: Buyer, item: str, n: int
) -> dict[str, Any]:
    r = await env.order(c, buyer, [(item, n)])
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    payment = await pay(c, buyer.auth, order)
    await eventually(
        lambda: env.order_row(order["id"]),
        lambda row: row["status"] == "PREPARING" and row["stock_state"] == "COMMITTED",
        timeout=20,
    )
    return {**order, "payment_id": payment["id"]}


async def test_find_refund_and_summarize_a_drop(orders_env: OrdersEnv) -> None:
    """A drop of 3 + 2 pairs: a (a real account) buys 2 and pays; b's card is declined; c holds
    one unpaid; d buys the last pair, e is turned away sold out, then d is refunded by the CLI."""
    env = orders_env
    async with env.client() as c:
        product, (big, small) = await env.drop(c, [3, 2], name="CLI Drop")
        pid = product["id"]
        user = await env.platform.verified_user(c)
        a, b, c_buyer, d, e = Buyer(user.id, user.auth), *(env.buyer() for _ in range(4))
        order_a = await _paid(env, c, a, big["id"], 2)
        r = await env.order(c, b, [(big["id"], 1)])
        assert r.status_code == 201, r.text
        order_b = r.json()
        auth = await c.post(
            "/pg/v1/sandbox/authorizations",
            json={
                "order_id": order_b["id"],
                "amount": order_b["total_amount"],
                "card_number": DECLINE,
            },
        )
        declined = await c.post(
            "/api/payments/confirm",
            json={
                "order_id": order_b["id"],
                "payment_key": auth.json()["payment_key"],
                "amount": order_b["total_amount"],
            },
            headers={**b.auth, "Idempotency-Key": f"k-{order_b['id']}"},
        )
        assert_problem(declined, 402, "payment_declined")
        await eventually(
            lambda: env.order_row(order_b["id"]), lambda row: row["status"] == "PAYMENT_FAILED"
        )
        r = await env.order(c, c_buyer, [(small["id"], 1)])
        assert r.status_code == 201, r.text
        order_c = r.json()
        order_d = await _paid(env, c, d, small["id"], 1)
        assert_problem(await env.order(c, e, [(small["id"], 1)]), 409, "sold_out")

        # Find: by id, by product and status, by the buyer's email.
        found = cli_json("orders", "find", "--id", order_a["id"])
        assert (found["id"], found["status"], found["buyer_id"]) == (
            order_a["id"],
            "PREPARING",
            a.id,
        )
        assert found["payment_id"] == order_a["payment_id"]
        paid = cli_json("orders", "find", "--product", pid, "--status", "PREPARING")
        assert {o["id"] for o in paid["items"]} == {order_a["id"], order_d["id"]}
        assert paid["next_cursor"] is None
        everything = cli_json("orders", "find", "--product", pid, "--limit", "3")
        assert len(everything["items"]) == 3  # 4 orders: the newest 3, and a cursor for more
        assert everything["next_cursor"] is not None
        mine = cli_json("orders", "find", "--email", user.email.upper())
        assert [o["id"] for o in mine["items"]] == [order_a["id"]]
        table = cli("orders", "find", "--product", pid, "--status", "PAYMENT_FAILED")
        assert table.returncode == 0, table.stderr
        assert order_b["id"] in table.stdout
        assert order_a["id"] not in table.stdout
        assert "1 order(s)" in table.stdout

        # Refund d: cancelled at once, refunded at the PG before the command returns.
        refunded = cli_json("orders", "refund", order_d["id"], "--yes")
        assert refunded["status"] == "CANCELLED"
        assert refunded["refunded_at"] is not None
        assert refunded["history"][-1]["reason"] == "admin_refund"
        charges = await _charges(env, order_d["id"])
        assert (charges["charges"], charges["refunds"]) == (1, 1)
        assert charges["refunded_amount"] == order_d["total_amount"]
        payment = await c.get(f"/api/payments/{order_d['payment_id']}", headers=d.auth)
        assert payment.json()["status"] == "CANCELED"
        again = cli("orders", "refund", order_d["id"], "--yes")
        assert again.returncode == 1
        assert "invalid_state" in again.stderr
        assert "CANCELLED" in again.stderr
        assert (await _charges(env, order_d["id"]))["refunds"] == 1
        shown = cli("orders", "find", "--id", order_d["id"])
        assert "admin_refund" in shown.stdout
        assert "Traceback" not in shown.stderr + again.stderr

        summary = cli_json("products", "summary", pid)
    assert summary["sale_mode"] == "fcfs"
    assert summary["pairs"] == {"total": 5, "sold": 2, "held": 1, "left": 2}
    sizes = {s["item_id"]: s for s in summary["sizes"]}
    assert {k: sizes[big["id"]][k] for k in ("total", "sold", "held", "left")} == {
        "total": 3,
        "sold": 2,
        "held": 0,
        "left": 1,
    }
    assert {k: sizes[small["id"]][k] for k in ("total", "sold", "held", "left")} == {
        "total": 2,
        "sold": 0,
        "held": 1,
        "left": 1,
    }
    assert summary["orders"] == 4
    assert summary["orders_by_status"] == {
        "PENDING_PAYMENT": 1,
        "PREPARING": 1,
        "SHIPPING": 0,
        "DELIVERED": 0,
        "CANCELLED": 1,
        "PAYMENT_FAILED": 1,
        "EXPIRED": 0,
    }
    assert summary["payments"] == {"approved": 2, "declined": 1, "refunded": 1}
    assert summary["refusals"] == {
        "sold_out": 1,
        "purchase_limit_exceeded": 0,
        "drop_not_open": 0,
        "admission_required": 0,
        "other": 0,
    }
    assert summary["server_errors"] == 0
    assert (summary["queue"], summary["draw"]) == (None, None)
    assert summary["sold_out_after_seconds"] is None  # two pairs are on sale again
    assert order_c["id"]  # c's unpaid order is the pair held

    human = cli("products", "summary", pid)
    assert human.returncode == 0, human.stderr
    assert "5 / 2 / 1 / 2" in human.stdout
    assert "not sold out" in human.stdout

    # The operator's token was minted for the CLI's own subject, and every call is audited.
    audit = [json.loads(line) for line in (DATA_DIR / "admin-audit.log").read_text().splitlines()]
    minted = [r for r in audit if r["event"] == "admin_token_minted"]
    assert minted
    assert all(r["subject"].startswith("operator-cli:") for r in minted)
    refund_calls = [
        r
        for r in audit
        if r["event"] == "admin_call" and r["path"].endswith(f"{order_d['id']}/refund")
    ]
    assert [r["status"] for r in refund_calls] == [200, 409]
    assert all(r["request_id"] for r in refund_calls)


async def test_a_sold_out_drop_says_when_its_last_pair_went(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        product, (item,) = await env.drop(c, [1], name="CLI Sell-out")
        order = await _paid(env, c, env.buyer(), item["id"], 1)
    summary = cli_json("products", "summary", product["id"])
    assert summary["pairs"] == {"total": 1, "sold": 1, "held": 0, "left": 0}
    assert datetime.fromisoformat(summary["sold_out_at"]) == datetime.fromisoformat(
        order["created_at"]
    )
    opened = datetime.fromisoformat(product["release_at"])
    expected = (datetime.fromisoformat(order["created_at"]) - opened).total_seconds()
    assert summary["sold_out_after_seconds"] == pytest.approx(expected, abs=0.01)
    assert 3000 < summary["sold_out_after_seconds"] < 4000  # the drop opened an hour ago


async def test_outbox_status_shows_each_services_figures(orders_env: OrdersEnv) -> None:
    status = cli_json("events", "outbox")
    assert set(status["outbox"]) == {"orders", "products", "payments"}
    for service, figure in status["outbox"].items():
        assert figure["status"] == "ok", (service, figure)
        assert isinstance(figure["backlog"], int)
        assert figure["backlog"] >= 0
        assert isinstance(figure["unroutable"], int), (service, figure)  # from its /metrics
        assert figure["fix"] == f"snapshoe worker {service}"
    assert status["dead_letters"]["status"] == "ok"
    assert isinstance(status["dead_letters"]["total"], int)
    table = cli("events", "outbox")
    assert table.returncode == 0, table.stderr
    for service in ("orders", "products", "payments"):
        assert f"snapshoe worker {service}" in table.stdout
    assert "dead letters: " in table.stdout


async def test_reconcile_reports_drift_and_repairs_it(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        product, (item,) = await env.drop(c, [4], name="CLI Drift")
    assert cli("products", "reconcile", "--check").returncode == 0
    r = aioredis.Redis.from_url(env.settings.redis_url)
    try:
        await r.hset(f"{env.settings.namespace}:pgate:{{{product['id']}}}:avail", item["id"], 40)
    finally:
        await r.aclose()
    drift = cli("products", "reconcile", "--check", "--json")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    figure = json.loads(drift.stdout)
    assert figure["drifted"] is True
    assert figure["items"] == 1
    assert figure["fix"] == "snapshoe products reconcile"
    repaired = cli("products", "reconcile")
    assert repaired.returncode == 0, repaired.stderr
    assert "stock gate repaired" in repaired.stdout
    row = next(ln for ln in repaired.stdout.splitlines() if item["id"] in ln)
    assert "available" in row
    assert "4" in row.split(item["id"])[1]
    assert "40" in row.split(item["id"])[1]
    ok = cli("products", "reconcile", "--check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "the gate matches the ledger" in ok.stdout
    assert (await env.ledger(item["id"]))["available"] == 4
