"""The cart against the real platform (``snapshoe up``): lines with product details from the
products service, bad input, the verified-email rule, separate carts, the line limit under
concurrency, products outages (in-process users apps pointed at a dead or a silent products),
the internal API for orders, and the ``order.placed`` consumer (events published on the real
exchange; duplicates have no second effect).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.support.platform import Platform, User, make_test_settings
from tests.support.waiting import wait_until

from snapshoe.kernel.auth import build_issuer
from snapshoe.kernel.clients.users import UsersClient
from snapshoe.kernel.contracts.orders import OrderLine, OrderPlaced
from snapshoe.kernel.db import create_sessions
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.messaging import declare_consumer_queue, exchange_name, handle_once
from snapshoe.users.bootstrap import PRODUCTS_RETRIES, PRODUCTS_TIMEOUT_SECONDS, create_app
from snapshoe.users.consumers import CART_HANDLERS, CART_QUEUE, not_from_cart
from snapshoe.users.domain import CART_MAX_LINES
from snapshoe.users.tables import inbox

PROBLEM = "application/problem+json"
PRICE = 159_000


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    assert r.json()["code"] == code, r.text


@dataclass
class Catalog:
    product_id: str
    in_stock: str  # stock 5, product price
    sold_out: str  # stock 0
    priced: str  # its own price (PRICE + 10_000), another product
    many: list[str]  # CART_MAX_LINES + 5 items, for the line limit


async def _admin_post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    r = await client.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
async def catalog(platform: Platform) -> Catalog:
    """Products made through the gateway's admin API with an admin token."""
    token, _ = build_issuer(platform.settings).issue_access(
        "cart-test-admin", email_verified=True, roles=["admin"]
    )
    product = {
        "name": "Cart Runner",
        "brand": "CartBrand",
        "description": "for the cart tests",
        "price": PRICE,
        "release_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "per_user_limit": 0,
    }
    async with platform.client() as c:
        c.headers["Authorization"] = f"Bearer {token}"
        p1 = await _admin_post(c, "/api/admin/products", product)
        p2 = await _admin_post(c, "/api/admin/products", {**product, "name": "Cart Walker"})
        items = f"/api/admin/products/{p1['id']}/items"
        in_stock = await _admin_post(c, items, {"size": 270, "color": "Black", "stock": 5})
        sold_out = await _admin_post(c, items, {"size": 280, "color": "White", "stock": 0})
        priced = await _admin_post(
            c,
            f"/api/admin/products/{p2['id']}/items",
            {"size": 255, "color": "Red", "stock": 3, "price": PRICE + 10_000},
        )
        many = await asyncio.gather(
            *(
                _admin_post(c, items, {"size": 200 + n, "color": "Grey", "stock": 1})
                for n in range(CART_MAX_LINES + 5)
            )
        )
    return Catalog(p1["id"], in_stock["id"], sold_out["id"], priced["id"], [m["id"] for m in many])


@pytest.fixture
async def gw(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client


@pytest.fixture
async def buyer(platform: Platform, gw: httpx.AsyncClient) -> User:
    return await platform.verified_user(gw)


@pytest.fixture(scope="module")
async def cart_db(platform: Platform) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(platform.settings.database_url("users"), pool_size=5)
    yield engine
    await engine.dispose()


async def put(client: httpx.AsyncClient, user: User, item: str, quantity: Any) -> httpx.Response:
    return await client.put(
        f"/api/cart/lines/{item}", json={"quantity": quantity}, headers=user.auth
    )


async def cart(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    r = await client.get("/api/cart", headers=user.auth)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def quantities(body: dict[str, Any]) -> dict[str, int]:
    return {line["item_id"]: line["quantity"] for line in body["lines"]}


# Lines and the view


async def test_lines_are_added_changed_and_removed_with_product_details(
    gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    assert await cart(gw, buyer) == {"lines": [], "total_amount": 0, "degraded": False}

    r = await put(gw, buyer, catalog.in_stock, 2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "lines": [
            {
                "item_id": catalog.in_stock,
                "quantity": 2,
                "product_id": catalog.product_id,
                "product_name": "Cart Runner",
                "size": 270,
                "color": "Black",
                "unit_price": PRICE,
                "available": True,
            }
        ],
        "total_amount": 2 * PRICE,
        "degraded": False,
    }

    # A sold-out item may sit in the cart; it says so. A line's own price is used.
    r = await put(gw, buyer, catalog.sold_out, 1)
    assert r.status_code == 200, r.text
    r = await put(gw, buyer, catalog.priced, 3)
    assert r.status_code == 200, r.text
    lines = {line["item_id"]: line for line in r.json()["lines"]}
    assert lines[catalog.sold_out]["available"] is False
    assert lines[catalog.priced]["unit_price"] == PRICE + 10_000
    assert lines[catalog.priced]["product_name"] == "Cart Walker"
    assert r.json()["total_amount"] == 2 * PRICE + PRICE + 3 * (PRICE + 10_000)
    # Lines keep the order they were added in.
    assert [line["item_id"] for line in r.json()["lines"]] == [
        catalog.in_stock,
        catalog.sold_out,
        catalog.priced,
    ]

    # PUT sets the quantity (it does not add to it), and is idempotent.
    for _ in range(2):
        r = await put(gw, buyer, catalog.in_stock, 5)
        assert r.status_code == 200, r.text
        assert quantities(r.json())[catalog.in_stock] == 5
    assert await cart(gw, buyer) == r.json()

    r = await gw.delete(f"/api/cart/lines/{catalog.sold_out}", headers=buyer.auth)
    assert r.status_code == 200, r.text
    assert quantities(r.json()) == {catalog.in_stock: 5, catalog.priced: 3}
    # Removing a line that is not there is not an error and changes nothing.
    r2 = await gw.delete(f"/api/cart/lines/{catalog.sold_out}", headers=buyer.auth)
    assert r2.status_code == 200, r2.text
    assert r2.json() == r.json()

    r = await gw.delete("/api/cart", headers=buyer.auth)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert await cart(gw, buyer) == {"lines": [], "total_amount": 0, "degraded": False}


async def test_one_item_is_one_line_whatever_the_spelling(
    gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    # The users database compares ids case-insensitively; another spelling of an id must
    # never become a second line, nor a line products would not recognize.
    r = await put(gw, buyer, catalog.in_stock.lower(), 1)
    assert r.status_code in (200, 404), r.text
    r = await put(gw, buyer, catalog.in_stock, 4)
    assert r.status_code == 200, r.text
    assert quantities(r.json()) == {catalog.in_stock: 4}
    assert r.json()["lines"][0]["available"] is True


async def test_unknown_item_and_bad_input_change_nothing(
    gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    assert (await put(gw, buyer, catalog.in_stock, 3)).status_code == 200
    before = await cart(gw, buyer)

    assert_problem(await put(gw, buyer, "01JUNKNOWNITEM0000000000000", 1), 404, "not_found")
    for quantity in (0, 11, -1, "2", 2.5, True, None, [1], {"n": 1}):
        assert_problem(await put(gw, buyer, catalog.in_stock, quantity), 422, "validation_error")
    bad: object
    for bad in ({}, [], "3"):
        r = await gw.put(f"/api/cart/lines/{catalog.in_stock}", json=bad, headers=buyer.auth)
        assert_problem(r, 422, "validation_error")
    r = await gw.put(
        f"/api/cart/lines/{catalog.in_stock}",
        content=b"{not json",
        headers={**buyer.auth, "content-type": "application/json"},
    )
    assert_problem(r, 400, "invalid_json")
    for bad_id in ("a,b", "x" * 65):
        assert_problem(await put(gw, buyer, bad_id, 1), 422, "validation_error")
        r = await gw.delete(f"/api/cart/lines/{bad_id}", headers=buyer.auth)
        assert_problem(r, 422, "validation_error")
    # An encoded byte in the id never reaches users: the gateway's 400 (docs/gateway.md).
    for bad_id in ("a%20b", "%00"):
        assert_problem(await put(gw, buyer, bad_id, 1), 400, "ambiguous_path")
        r = await gw.delete(f"/api/cart/lines/{bad_id}", headers=buyer.auth)
        assert_problem(r, 400, "ambiguous_path")
    assert_problem(await gw.post("/api/cart", headers=buyer.auth), 405, "method_not_allowed")

    assert await cart(gw, buyer) == before


async def test_unverified_email_is_refused(gw: httpx.AsyncClient, catalog: Catalog) -> None:
    email = f"unverified-{secrets.token_hex(6)}@example.com"
    password = "correct-Horse-battery-9"
    r = await gw.post("/api/users", json={"email": email, "password": password, "name": "U"})
    assert r.status_code == 202, r.text
    r = await gw.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    for method, path, body in (
        ("GET", "/api/cart", None),
        ("PUT", f"/api/cart/lines/{catalog.in_stock}", {"quantity": 1}),
        ("DELETE", f"/api/cart/lines/{catalog.in_stock}", None),
        ("DELETE", "/api/cart", None),
    ):
        r = await gw.request(method, path, json=body, headers=auth)
        assert_problem(r, 403, "email_not_verified")
    for method, path in (("GET", "/api/cart"), ("DELETE", "/api/cart")):
        assert_problem(await gw.request(method, path), 401, "unauthorized")


async def test_each_buyer_has_their_own_cart(
    platform: Platform, gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    other = await platform.verified_user(gw)
    assert (await put(gw, buyer, catalog.in_stock, 2)).status_code == 200
    assert (await cart(gw, other))["lines"] == []

    # The other buyer's changes to "the same" line touch only their own cart.
    assert (await put(gw, other, catalog.in_stock, 7)).status_code == 200
    r = await gw.delete(f"/api/cart/lines/{catalog.in_stock}", headers=other.auth)
    assert r.status_code == 200, r.text
    assert (await gw.delete("/api/cart", headers=other.auth)).status_code == 204
    assert quantities(await cart(gw, buyer)) == {catalog.in_stock: 2}


async def test_line_limit_holds_under_concurrent_adds(
    platform: Platform, buyer: User, catalog: Catalog
) -> None:
    """Every item of ``many`` (limit + 5) added twice at once: exactly the limit gets in."""
    async with platform.client(base_url=platform.url("users")) as direct:
        items = catalog.many * 2
        rs = await asyncio.gather(*(put(direct, buyer, item, 1) for item in items))
        statuses = [r.status_code for r in rs]
        assert set(statuses) <= {200, 409}, statuses
        for r in rs:
            if r.status_code == 409:
                assert_problem(r, 409, "cart_full")
                assert r.json()["max_lines"] == CART_MAX_LINES
        body = await cart(direct, buyer)
        assert len(body["lines"]) == CART_MAX_LINES
        in_cart = set(quantities(body))
        # Items that got in were never refused as "full" on their second try: only the
        # five that did not get in are refused, twice each.
        assert statuses.count(409) == 2 * 5
        assert len(in_cart) == CART_MAX_LINES

        # A full cart still lets its lines change; a new item is refused.
        some = next(iter(in_cart))
        assert (await put(direct, buyer, some, 9)).status_code == 200
        left_out = next(i for i in catalog.many if i not in in_cart)
        assert_problem(await put(direct, buyer, left_out, 1), 409, "cart_full")


async def test_concurrent_puts_of_one_line_leave_one_of_them(
    platform: Platform, buyer: User, catalog: Catalog
) -> None:
    async with platform.client(base_url=platform.url("users")) as direct:
        sent = [1 + n % 10 for n in range(200)]
        rs = await asyncio.gather(*(put(direct, buyer, catalog.in_stock, q) for q in sent))
        assert all(r.status_code == 200 for r in rs), {r.status_code for r in rs}
        body = await cart(direct, buyer)
    assert len(body["lines"]) == 1
    assert body["lines"][0]["quantity"] in sent


# Products outages


@contextlib.asynccontextmanager
async def users_app(products_port: int) -> AsyncIterator[httpx.AsyncClient]:
    """A users app in this process, on the platform's database, whose products is elsewhere."""
    app = create_app(make_test_settings(products_port=products_port, log_level="WARNING"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://users.test") as c:
            yield c


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_products_down_degrades_the_view_and_refuses_new_lines(
    gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    assert (await put(gw, buyer, catalog.in_stock, 2)).status_code == 200
    assert (await put(gw, buyer, catalog.priced, 1)).status_code == 200

    async with users_app(dead_port()) as down:
        body = await cart(down, buyer)
        assert body["degraded"] is True
        assert body["total_amount"] is None
        assert body["lines"] == [
            {
                "item_id": item,
                "quantity": q,
                "product_id": None,
                "product_name": None,
                "size": None,
                "color": None,
                "unit_price": None,
                "available": None,
            }
            for item, q in ((catalog.in_stock, 2), (catalog.priced, 1))
        ]

        # A line cannot be added or changed without products vouching for the item.
        r = await put(down, buyer, catalog.sold_out, 1)
        assert_problem(r, 503, "service_unavailable")
        assert r.headers["retry-after"] == "2"
        assert_problem(await put(down, buyer, catalog.in_stock, 9), 503, "service_unavailable")

        # Removing works, and answers the (degraded) cart.
        r = await down.delete(f"/api/cart/lines/{catalog.priced}", headers=buyer.auth)
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] is True
        assert quantities(r.json()) == {catalog.in_stock: 2}

        # An empty cart needs no products at all.
        assert (await down.delete("/api/cart", headers=buyer.auth)).status_code == 204
        assert await cart(down, buyer) == {"lines": [], "total_amount": 0, "degraded": False}


async def test_silent_products_degrades_the_view_in_bounded_time(
    gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    """A products that accepts connections and never answers (hung process)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert (await put(gw, buyer, catalog.in_stock, 1)).status_code == 200
    try:
        async with users_app(port) as silent:
            start = time.monotonic()
            body = await cart(silent, buyer)
            elapsed = time.monotonic() - start
            assert body["degraded"] is True
            assert quantities(body) == {catalog.in_stock: 1}
            # Each attempt waits out its read timeout; then the view degrades.
            bound = (1 + PRODUCTS_RETRIES) * PRODUCTS_TIMEOUT_SECONDS
            assert bound - 0.1 < elapsed < bound + 1.5, elapsed
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# The internal API for orders


async def test_internal_cart_api(
    platform: Platform, gw: httpx.AsyncClient, buyer: User, catalog: Catalog
) -> None:
    assert (await put(gw, buyer, catalog.in_stock, 2)).status_code == 200
    assert (await put(gw, buyer, catalog.priced, 1)).status_code == 200
    expected = {"lines": [{"item_id": catalog.in_stock, "quantity": 2},
                          {"item_id": catalog.priced, "quantity": 1}]}  # fmt: skip

    client = UsersClient(platform.settings)
    try:
        assert await client.get_cart(buyer.id) == expected
        assert await client.get_cart("no-such-user") == {"lines": []}
    finally:
        await client.aclose()

    async with platform.client(base_url=platform.url("users")) as direct:
        path = f"/internal/carts/{buyer.id}"
        assert_problem(await direct.get(path), 403, "forbidden")
        assert_problem(
            await direct.get(path, headers={"X-Internal-Token": "x" * 30}), 403, "forbidden"
        )
        r = await direct.get(path, headers=internal_headers(platform.settings))
        assert r.status_code == 200, r.text
        assert r.json() == expected
    # The gateway never routes /internal.
    r = await gw.get(f"/internal/carts/{buyer.id}", headers=internal_headers(platform.settings))
    assert r.status_code in (403, 404), r.text
    assert "lines" not in r.text


# order.placed: an order from the cart takes what it bought out of the cart


def order_placed(user: User, lines: list[tuple[str, int]], *, from_cart: bool) -> OrderPlaced:
    return OrderPlaced(
        order_id=secrets.token_urlsafe(16),
        buyer_id=user.id,
        total_amount=sum(q * PRICE for _, q in lines),
        lines=[
            OrderLine(item_id=i, product_id="P", quantity=q, unit_price=PRICE) for i, q in lines
        ],
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
        from_cart=from_cart,
    )


async def publish(platform: Platform, *events: OrderPlaced) -> None:
    connection = await aio_pika.connect_robust(platform.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        # Declared as the consumer declares it, so nothing is lost if the worker is still
        # starting (the declaration is idempotent).
        await declare_consumer_queue(
            channel,
            platform.settings,
            f"{platform.settings.namespace}.{CART_QUEUE}",
            list(CART_HANDLERS),
        )
        exchange = await channel.get_exchange(exchange_name(platform.settings))
        for event in events:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(event.to_message()),
                    message_id=event.event_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.routing_key(),
            )


async def processed(db: AsyncEngine, event_id: str) -> bool:
    """Whether the cart's consumer applied the event (the order mail's consumer of the same
    events keeps its own inbox rows)."""
    async with db.connect() as conn:
        n = (
            await conn.execute(
                text("SELECT COUNT(*) FROM inbox WHERE event_id = :e AND consumer LIKE :c"),
                {"e": event_id, "c": f"%.{CART_QUEUE}"},
            )
        ).scalar_one()
    return bool(n)


async def test_order_placed_takes_the_bought_lines_out_of_the_cart(
    platform: Platform,
    gw: httpx.AsyncClient,
    buyer: User,
    catalog: Catalog,
    cart_db: AsyncEngine,
) -> None:
    keep, gone, raised = catalog.many[0], catalog.many[1], catalog.many[2]
    for item, q in ((keep, 1), (gone, 2), (raised, 3), (catalog.in_stock, 4)):
        assert (await put(gw, buyer, item, q)).status_code == 200
    # Bought: all of `gone`, 1 of `raised` (the buyer had raised it to 3 after ordering 1),
    # and 5 of in_stock while the cart holds 4 (lowered after ordering): nothing goes negative.
    event = order_placed(buyer, [(gone, 2), (raised, 1), (catalog.in_stock, 5)], from_cart=True)
    # Delivered three times: the inbox makes the copies no-ops.
    await publish(platform, event, event, event)
    expected = {keep: 1, raised: 2}

    async def done() -> bool:
        return quantities(await cart(gw, buyer)) == expected

    await wait_until(done, what="the cart to lose the bought lines")
    assert await processed(cart_db, event.event_id)
    # The copies are consumed too (or are about to be); none may take anything more.
    await asyncio.sleep(1.0)
    assert quantities(await cart(gw, buyer)) == expected

    # Another buyer's order, and an order not made from the cart, leave this cart alone.
    other = await platform.verified_user(gw)
    direct_buy = order_placed(buyer, [(keep, 1), (raised, 2)], from_cart=False)
    theirs = order_placed(other, [(keep, 1)], from_cart=True)
    await publish(platform, direct_buy, theirs)

    async def theirs_processed() -> bool:
        return await processed(cart_db, theirs.event_id)

    await wait_until(theirs_processed, what="the other buyer's event to be consumed")
    await asyncio.sleep(0.5)
    assert quantities(await cart(gw, buyer)) == expected
    # Not from the cart: acked without a transaction, so it leaves no inbox row either.
    assert not await processed(cart_db, direct_buy.event_id)
    assert not_from_cart(direct_buy.to_message())
    assert not not_from_cart(theirs.to_message())


async def test_order_placed_duplicates_have_no_second_effect(
    platform: Platform, gw: httpx.AsyncClient, buyer: User, catalog: Catalog, cart_db: AsyncEngine
) -> None:
    """The consumer's handler run directly through the kernel's inbox, many times at once."""
    item = catalog.many[3]
    assert (await put(gw, buyer, item, 10)).status_code == 200
    event = order_placed(buyer, [(item, 3)], from_cart=True)
    (handler,) = CART_HANDLERS.values()
    sessions = create_sessions(cart_db)
    consumer = f"{platform.settings.namespace}.test-cart-{secrets.token_hex(4)}"
    body = event.to_message()

    results = await asyncio.gather(
        *(handle_once(sessions, inbox, consumer, body, handler) for _ in range(20)),
        return_exceptions=True,
    )
    # Concurrent duplicates either lose the inbox insert race (False) or, at worst, fail and
    # would be redelivered; exactly one applies.
    assert sum(r is True for r in results) == 1, results
    assert quantities(await cart(gw, buyer)) == {item: 7}
    assert await handle_once(sessions, inbox, consumer, body, handler) is False
    assert quantities(await cart(gw, buyer)) == {item: 7}


async def test_cart_read_right_after_an_order_from_it_shows_the_lines_gone(
    platform: Platform, gw: httpx.AsyncClient
) -> None:
    """Issue 12 item 19: the buyer's next read after the 201 of ``from_cart: true`` is
    without the bought lines (not after the order.placed event arrives). Several buyers at
    once, each ordering from its cart again and again, reading the cart at once each time;
    a line added after the order is read back untouched."""
    from tests.integration.orders.helpers import Buyer, OrdersEnv

    env = OrdersEnv(platform)
    buyers_n, rounds = 6, 4
    try:
        _, items = await env.drop(gw, [buyers_n * rounds * 2 + 10, 100])
        item, other = items[0]["id"], items[1]["id"]
        users = await asyncio.gather(*(platform.verified_user() for _ in range(buyers_n)))

        async def one_buyer(user: User) -> list[dict[str, int]]:
            seen = []
            async with platform.client() as c:
                buyer = Buyer(user.id, user.auth)
                for _ in range(rounds):
                    assert (await put(c, user, item, 2)).status_code == 200
                    r = await env.order(c, buyer, from_cart=True)
                    assert r.status_code == 201, r.text
                    seen.append(quantities(await cart(c, user)))
                    # A line put right after the order is the buyer's, not the order's.
                    assert (await put(c, user, other, 1)).status_code == 200
                    assert (
                        await c.delete(f"/api/cart/lines/{other}", headers=user.auth)
                    ).status_code == 200
            return seen

        results = await asyncio.gather(*(one_buyer(u) for u in users))
    finally:
        await env.aclose()
    assert all(seen == [{}] * rounds for seen in results), results
