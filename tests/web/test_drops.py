"""Queue and draw drops in real Chromium: the waiting room's position moves on the page by
itself (SSE relayed by the store), the buyer is admitted and buys; a draw entry with a card, its
commitment, then the result and the revealed seed."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.async_api import expect

from tests.integration.orders.helpers import Buyer, admin_headers, key
from tests.support.waiting import eventually
from tests.web.conftest import Shop
from tests.web.test_store import APPROVE, pay_in_window


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def _product(shop: Shop, client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    admin = admin_headers(shop.platform.settings)
    body = {
        "name": f"드롭 {secrets.token_hex(3)}",
        "brand": "SnapTest",
        "price": 120_000,
        "per_user_limit": 1,
        **fields,
    }
    r = await client.post("/api/admin/products", json=body, headers=admin)
    assert r.status_code == 201, r.text
    product: dict[str, Any] = r.json()
    r = await client.post(
        f"/api/admin/products/{product['id']}/items",
        json={"size": 265, "color": "Red", "stock": 1},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    product["item"] = r.json()
    return product


async def _ticket(client: httpx.AsyncClient, pid: str, b: Buyer) -> dict[str, Any]:
    r = await client.get(f"/api/products/{pid}/queue/me", headers=b.auth)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _order_then_cancel(client: httpx.AsyncClient, pid: str, item: str, b: Buyer) -> None:
    """The admitted buyer orders and cancels: the pair comes back and the next is admitted."""
    t = await eventually(lambda: _ticket(client, pid, b), lambda t: t["state"] == "admitted")
    r = await client.post(
        "/api/orders",
        json={"lines": [{"item_id": item, "quantity": 1}]},
        headers={**b.auth, "Idempotency-Key": key(), "Admission-Token": t["admission_token"]},
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/orders/{r.json()['id']}/cancel", headers=b.auth)
    assert r.status_code == 200, r.text


async def test_a_queued_buyer_watches_the_position_move_then_is_admitted_and_buys(
    shop: Shop,
) -> None:
    page = await shop.page()
    await shop.sign_up(page)
    async with shop.env.client() as client:
        product = await _product(
            shop,
            client,
            sale_mode="queue",
            admission_seconds=300,
            queue_opens_at=_at(timedelta(minutes=-1)),
            release_at=_at(timedelta(seconds=2)),
        )
        pid, item = product["id"], product["item"]["id"]
        early = [shop.env.buyer(), shop.env.buyer()]
        for b in early:
            r = await client.post(f"/api/products/{pid}/queue", headers=b.auth)
            assert r.status_code == 201, r.text
        await eventually(
            lambda: _ticket(client, pid, early[0]),
            lambda t: t["position"] is not None or t["state"] == "admitted",
        )
        # The web buyer joins after the release: behind both, in arrival order.
        await page.goto(f"/products/{pid}")
        await page.get_by_role("button", name="대기열 들어가기").click()
        position = page.locator("#ticket-position")
        await expect(position).to_have_text("2")
        states = {b.id: (await _ticket(client, pid, b))["state"] for b in early}
        first = next(b for b in early if states[b.id] == "admitted")
        second = next(b for b in early if b is not first)
        await _order_then_cancel(client, pid, item, first)
        # Moved without a reload: positions ride the stream's heartbeat (at most 15 s).
        await expect(position).to_have_text("1", timeout=20_000)
        await _order_then_cancel(client, pid, item, second)
        buy = page.locator("#admitted-buy")
        await expect(buy).to_be_visible()
        await expect(page.locator("#ticket-state")).to_contain_text("입장했습니다")
        await expect(page.locator("#admission-left")).to_have_text(re.compile(r"\d\d:\d\d"))
        await buy.get_by_label(re.compile("265")).check()
        await buy.get_by_role("button", name="구매하기").click()
        await pay_in_window(page, APPROVE)
        await page.wait_for_url(re.compile(r".*/orders/[^/]+$"))
        await expect(page.locator("#order-status")).to_have_attribute("data-status", "PREPARING")


async def test_a_draw_entry_shows_the_commitment_then_the_result_and_the_seed(
    shop: Shop,
) -> None:
    page = await shop.page()
    await shop.sign_up(page)
    async with shop.env.client() as client:
        close = timedelta(seconds=12)
        product = await _product(
            shop,
            client,
            sale_mode="draw",
            release_at=_at(timedelta(seconds=-30)),
            entry_opens_at=_at(timedelta(minutes=-1)),
            entry_closes_at=_at(close),
            draw_at=_at(close),
        )
        pid = product["id"]
        await page.goto(f"/products/{pid}")
        commitment = await page.locator("#draw-commitment").text_content()
        assert commitment
        assert re.fullmatch(r"[0-9a-f]{64}", commitment)
        form = page.locator("form.entry")
        await form.get_by_label(re.compile("265")).check()
        await form.get_by_label(re.compile("카드 번호")).fill(APPROVE)
        await form.get_by_label(re.compile("연도")).fill("30")
        await form.get_by_label(re.compile("월")).fill("12")
        await form.get_by_role("button", name="응모하기").click()
        await expect(page.locator("#entry-state")).to_have_attribute("data-state", "entered")

        async def result() -> tuple[str | None, str | None]:
            await page.reload()
            seed = page.locator("#draw-seed")
            shown = await seed.text_content() if await seed.count() else None
            return await page.locator("#entry-state").get_attribute("data-state"), shown

        state, seed = await eventually(
            result, lambda r: r == ("won", r[1]) and bool(r[1]), timeout=60, interval=0.5
        )
        assert state == "won"
        assert seed
        assert re.fullmatch(r"[0-9a-f]{64}", seed)
        assert hashlib.sha256(bytes.fromhex(seed)).hexdigest() == commitment
        await page.get_by_role("link", name=re.compile("주문")).last.click()
        await expect(page.locator("#order-status")).to_have_attribute("data-status", "PREPARING")
