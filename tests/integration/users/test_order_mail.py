"""The buyer's order mail against the real platform (``snapshoe up``): real accounts order
through the gateway, pay at the sandbox PG, and the order advances (its due time moved, so the
orders worker ships and delivers it at once); the users worker's ``users.order_mail`` queue
mails each step once, in the account's language only. A replayed event (the same event id
published again, as a relay's redelivery would) mails nothing more. A waiting room's admission
(products' ``queue.admitted``) mails the admitted buyer once. And the account's language:
sign-up's optional ``lang``, ``GET``/``PATCH /api/users/me``."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from tests.integration.orders.helpers import Buyer, OrdersEnv, admin_headers
from tests.integration.orders.helpers import pay as pay_order
from tests.support.platform import Platform, User
from tests.support.waiting import eventually

from snapshoe.kernel.contracts.orders import OrderPaid, OrderPlaced

HANGUL = re.compile("[\uac00-\ud7a3]")
PASSWORD = "correct-Horse-battery-9"
QUIET = 2.0  # a second mail would be sent well within this


@pytest.fixture(scope="module")
async def env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    e = OrdersEnv(platform)
    try:
        yield e
    finally:
        await e.aclose()


@pytest.fixture
async def gw(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client


async def sign_up(platform: Platform, client: httpx.AsyncClient, lang: str | None = None) -> User:
    email = f"mail-{secrets.token_hex(6)}@example.com"
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "name": "Minjun"}
    if lang is not None:
        body["lang"] = lang
    r = await client.post("/api/users", json=body)
    assert r.status_code == 202, r.text
    code = await platform.read_code(email)
    r = await client.post("/api/users/verification", json={"email": email, "code": code})
    assert r.status_code == 200, r.text
    return await platform.login(email, PASSWORD, client)


def buyer_of(user: User) -> Buyer:
    return Buyer(user.id, user.auth)


async def pay(client: httpx.AsyncClient, user: User, order: dict[str, Any]) -> None:
    await pay_order(client, user.auth, order)


async def order_mails(platform: Platform, email: str, order_id: str) -> list[dict[str, Any]]:
    return [m for m in await platform.messages(email) if order_id in m["body"]]


async def wait_for(
    platform: Platform, email: str, order_id: str, subject: str
) -> list[dict[str, Any]]:
    """The order's mails once one with ``subject`` is there."""

    async def probe() -> list[dict[str, Any]]:
        return await order_mails(platform, email, order_id)

    return await eventually(probe, lambda ms: any(m["subject"] == subject for m in ms), timeout=20)


async def advance(env: OrdersEnv, order_id: str, status: str) -> None:
    """Make the order's next stage due now, as the stage's time passing would."""

    async def ready() -> dict[str, Any]:
        return await env.order_row(order_id)

    await eventually(
        ready, lambda row: row["status"] == status and row["stock_state"] == "COMMITTED"
    )
    async with env.orders_db.begin() as conn:
        r = await conn.execute(
            text(
                "UPDATE orders SET next_transition_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND "
                "WHERE id = :i AND status = :s"
            ),
            {"i": order_id, "s": status},
        )
        assert r.rowcount == 1


async def outbox_event(env: OrdersEnv, order_id: str, routing_key: str) -> dict[str, Any]:
    async with env.orders_db.connect() as conn:
        body = (
            await conn.execute(
                text(
                    "SELECT body FROM outbox WHERE routing_key = :k "
                    "AND JSON_UNQUOTE(JSON_EXTRACT(body, '$.order_id')) = :i"
                ),
                {"k": routing_key, "i": order_id},
            )
        ).scalar_one()
    loaded: dict[str, Any] = orjson.loads(body) if isinstance(body, str | bytes) else body
    return loaded


# The account's language


async def test_the_language_is_set_at_sign_up_shown_and_changed(
    platform: Platform, gw: httpx.AsyncClient
) -> None:
    korean = await sign_up(platform, gw)
    me = (await gw.get("/api/users/me", headers=korean.auth)).json()
    assert me["lang"] == "ko"  # the default
    english = await sign_up(platform, gw, "en")
    assert (await gw.get("/api/users/me", headers=english.auth)).json()["lang"] == "en"

    r = await gw.patch("/api/users/me", json={"lang": "en"}, headers=korean.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {**me, "lang": "en"}
    assert (await gw.get("/api/users/me", headers=korean.auth)).json()["lang"] == "en"
    for bad in ({"lang": "fr"}, {"lang": "EN"}, {"lang": 1}, {}):
        r = await gw.patch("/api/users/me", json=bad, headers=korean.auth)
        assert r.status_code == 422, (bad, r.text)
    assert (await gw.get("/api/users/me", headers=korean.auth)).json()["lang"] == "en"
    assert (await gw.patch("/api/users/me", json={"lang": "ko"})).status_code == 401

    r = await gw.post(
        "/api/users",
        json={"email": "x@example.com", "password": PASSWORD, "name": "X", "lang": "de"},
    )
    assert r.status_code == 422, r.text


# An order's mails


async def test_an_english_buyer_gets_each_step_of_a_paid_order_once_in_english(
    platform: Platform, env: OrdersEnv, gw: httpx.AsyncClient
) -> None:
    user = await sign_up(platform, gw, "en")
    product, items = await env.drop(gw, [2], price=189_000, name=f"Air Mail {secrets.token_hex(3)}")
    r = await env.order(gw, buyer_of(user), [(items[0]["id"], 1)])
    assert r.status_code == 201, r.text
    order = r.json()
    oid = order["id"]

    mails = await wait_for(platform, user.email, oid, "[SnapShoe] Order confirmed")
    (placed,) = mails
    assert product["name"] in placed["body"]
    assert "KRW 189,000" in placed["body"]
    assert "Pay by: " in placed["body"]
    assert f"/orders/{oid}" in placed["body"]

    await pay(gw, user, order)
    await wait_for(platform, user.email, oid, "[SnapShoe] Payment received")
    await advance(env, oid, "PREPARING")
    await wait_for(platform, user.email, oid, "[SnapShoe] Your order has shipped")
    await advance(env, oid, "SHIPPING")
    await wait_for(platform, user.email, oid, "[SnapShoe] Your order was delivered")

    await asyncio.sleep(QUIET)
    mails = await order_mails(platform, user.email, oid)
    assert sorted(m["subject"] for m in mails) == [
        "[SnapShoe] Order confirmed",
        "[SnapShoe] Payment received",
        "[SnapShoe] Your order has shipped",
        "[SnapShoe] Your order was delivered",
    ]
    for m in mails:
        assert not HANGUL.search(m["subject"] + m["body"]), m
        assert m["body"].startswith("Hello Minjun,")
    (paid,) = [m for m in mails if m["subject"] == "[SnapShoe] Payment received"]
    assert product["name"] in paid["body"]
    assert "KRW 189,000" in paid["body"]

    # The same events again (a relay's redelivery): nothing more is mailed.
    await env.publish(
        [
            OrderPlaced.model_validate(await outbox_event(env, oid, "order.placed.v1")),
            OrderPaid.model_validate(await outbox_event(env, oid, "order.paid.v1")),
        ]
    )
    await asyncio.sleep(QUIET)
    assert len(await order_mails(platform, user.email, oid)) == 4


async def test_a_korean_buyer_is_told_a_refund_in_korean_and_an_unpaid_cancel_as_such(
    platform: Platform, env: OrdersEnv, gw: httpx.AsyncClient
) -> None:
    user = await sign_up(platform, gw)  # Korean: the default
    _, items = await env.drop(gw, [2], price=150_000)
    paid = (await env.order(gw, buyer_of(user), [(items[0]["id"], 1)])).json()
    unpaid = (await env.order(gw, buyer_of(user), [(items[0]["id"], 1)])).json()
    await pay(gw, user, paid)
    await eventually(lambda: env.order_row(paid["id"]), lambda row: row["status"] == "PREPARING")
    for order in (paid, unpaid):
        r = await gw.post(f"/api/orders/{order['id']}/cancel", headers=user.auth)
        assert r.status_code == 200, r.text

    refunded = "[SnapShoe] 주문이 취소되고 환불되었습니다"
    cancelled = "[SnapShoe] 주문이 취소되었습니다"
    await wait_for(platform, user.email, paid["id"], refunded)
    await wait_for(platform, user.email, unpaid["id"], cancelled)
    await asyncio.sleep(QUIET)
    mails = await order_mails(platform, user.email, paid["id"])
    assert sorted(m["subject"] for m in mails) == sorted(
        ["[SnapShoe] 주문이 접수되었습니다", "[SnapShoe] 결제가 완료되었습니다", refunded]
    )
    (mail,) = [m for m in mails if m["subject"] == refunded]
    assert mail["body"].startswith("Minjun님, 안녕하세요.")
    assert "전액 환불" in mail["body"]
    assert "Hello" not in mail["body"]
    english_words = re.compile(r"\b(the|order|your|refund|cancel\w*)\b", re.IGNORECASE)
    assert not english_words.search(mail["body"].replace(paid["id"], ""))
    mails = await order_mails(platform, user.email, unpaid["id"])
    assert sorted(m["subject"] for m in mails) == sorted(
        ["[SnapShoe] 주문이 접수되었습니다", cancelled]
    )
    (mail,) = [m for m in mails if m["subject"] == cancelled]
    assert "결제된 금액은 없습니다" in mail["body"]
    assert "환불" not in mail["body"]


async def test_a_language_changed_later_is_the_next_mails(
    platform: Platform, env: OrdersEnv, gw: httpx.AsyncClient
) -> None:
    user = await sign_up(platform, gw)
    r = await gw.patch("/api/users/me", json={"lang": "en"}, headers=user.auth)
    assert r.status_code == 200, r.text
    _, items = await env.drop(gw, [1])
    order = (await env.order(gw, buyer_of(user), [(items[0]["id"], 1)])).json()
    (mail,) = await wait_for(platform, user.email, order["id"], "[SnapShoe] Order confirmed")
    assert not HANGUL.search(mail["body"])


# A waiting room's admission


async def test_an_admitted_buyer_is_mailed_once(
    platform: Platform, env: OrdersEnv, gw: httpx.AsyncClient
) -> None:
    user = await sign_up(platform, gw, "en")
    name = f"Queue Mail {secrets.token_hex(3)}"
    now = datetime.now(UTC)
    r = await gw.post(
        "/api/admin/products",
        json={
            "name": name,
            "brand": "SnapTest",
            "price": 200_000,
            "release_at": (now + timedelta(seconds=2)).isoformat(),
            "sale_mode": "queue",
            "queue_opens_at": (now - timedelta(minutes=1)).isoformat(),
            "admission_seconds": 300,
        },
        headers=admin_headers(env.settings),
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await gw.post(
        f"/api/admin/products/{pid}/items",
        json={"size": 270, "color": "Black", "stock": 1},
        headers=admin_headers(env.settings),
    )
    assert r.status_code == 201, r.text
    r = await gw.post(f"/api/products/{pid}/queue", headers=user.auth)
    assert r.status_code == 201, r.text

    subject = f"[SnapShoe] It's your turn: {name}"

    async def mails() -> list[dict[str, Any]]:
        return [m for m in await platform.messages(user.email) if m["subject"] == subject]

    (mail,) = await eventually(mails, lambda ms: len(ms) >= 1, timeout=30)
    assert f"/products/{pid}" in mail["body"]
    assert "Order by: " in mail["body"]
    async with env.products_db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT JSON_UNQUOTE(JSON_EXTRACT(body, '$.buyer_id')) FROM outbox "
                    "WHERE routing_key = 'queue.admitted.v1' "
                    "AND JSON_UNQUOTE(JSON_EXTRACT(body, '$.product_id')) = :p"
                ),
                {"p": pid},
            )
        ).all()
    assert [r[0] for r in rows] == [user.id]  # one event for the one admission
    await asyncio.sleep(QUIET)
    assert len(await mails()) == 1
