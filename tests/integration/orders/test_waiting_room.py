"""The waiting room end to end through the gateway: sale-mode fields, joins, the release's
random order, admissions bounded by the stock, the Admission-Token on POST /api/orders, lapses
and returned pairs admitting the next buyer, and the end (docs/waiting-room.md)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integration.orders.helpers import Buyer, OrdersEnv, admin_headers, key
from tests.support.waiting import eventually

from snapshoe.bench.queue_figures import spearman
from snapshoe.products.bootstrap import create_app as create_products_app


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def queue_drop(
    env: OrdersEnv,
    client: httpx.AsyncClient,
    stock: int,
    *,
    release_in: timedelta,
    opens_in: timedelta = timedelta(minutes=-1),
    admission_seconds: int = 300,
    sizes: int = 1,
    **product: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A queue-mode product with ``sizes`` items of ``stock`` pairs each; the first item."""
    admin = admin_headers(env.settings)
    r = await client.post(
        "/api/admin/products",
        json={
            "name": f"Queue drop {secrets.token_hex(3)}",
            "brand": "SnapTest",
            "price": 200_000,
            "release_at": _at(release_in),
            "sale_mode": "queue",
            "queue_opens_at": _at(opens_in),
            "admission_seconds": admission_seconds,
            **product,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    items = []
    for n in range(sizes):
        r = await client.post(
            f"/api/admin/products/{created['id']}/items",
            json={"size": 270 + 5 * n, "color": "Black", "stock": stock},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        items.append(r.json())
    created["items"] = items
    return created, items[0]


async def join(client: httpx.AsyncClient, pid: str, buyer: Buyer) -> httpx.Response:
    return await client.post(f"/api/products/{pid}/queue", headers=buyer.auth)


async def ticket(client: httpx.AsyncClient, pid: str, buyer: Buyer) -> dict[str, Any]:
    r = await client.get(f"/api/products/{pid}/queue/me", headers=buyer.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def figures(env: OrdersEnv, client: httpx.AsyncClient, pid: str) -> dict[str, Any]:
    r = await client.get(f"/api/admin/products/{pid}/queue", headers=admin_headers(env.settings))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def places(env: OrdersEnv, pid: str) -> dict[str, int]:
    """buyer id -> place, from the database."""
    async with env.products_db.connect() as conn:
        rows = await conn.execute(
            text("SELECT buyer_id, place FROM queue_tickets WHERE product_id = :p"), {"p": pid}
        )
        return {r[0]: r[1] for r in rows}


async def queued_and_ranked(
    env: OrdersEnv, client: httpx.AsyncClient, pid: str, n: int
) -> tuple[dict[str, int], list[Buyer]]:
    """``n`` buyers join before the release; once it ranked them: their places, and the
    buyers in place order."""
    buyers = [env.buyer() for _ in range(n)]
    for b in buyers:
        assert (await join(client, pid, b)).status_code == 201
    ranked = await eventually(lambda: places(env, pid), lambda p: None not in p.values())
    return ranked, sorted(buyers, key=lambda b: ranked[b.id])


async def lapse(env: OrdersEnv, pid: str, buyer_id: str) -> None:
    """The buyer's admission lapses: its deadline moved into the past, as time would."""
    async with env.products_db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE queue_tickets SET admitted_until = NOW(6) - INTERVAL 1 SECOND"
                " WHERE product_id = :p AND buyer_id = :b"
            ),
            {"p": pid, "b": buyer_id},
        )


async def buy(
    env: OrdersEnv, client: httpx.AsyncClient, buyer: Buyer, item_id: str, token: str | None
) -> httpx.Response:
    headers = {**buyer.auth, "Idempotency-Key": key()}
    if token is not None:
        headers["Admission-Token"] = token
    return await client.post(
        "/api/orders", json={"lines": [{"item_id": item_id, "quantity": 1}]}, headers=headers
    )


async def test_a_queue_product_shows_its_mode_and_defaults(orders_env: OrdersEnv) -> None:
    async with orders_env.client() as client:
        admin = admin_headers(orders_env.settings)
        release = datetime.now(UTC) + timedelta(hours=2)
        base = {"brand": "SnapTest", "price": 1000, "release_at": release.isoformat()}
        r = await client.post(
            "/api/admin/products",
            json={**base, "name": "Defaults", "sale_mode": "queue"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["sale_mode"] == "queue"
        assert body["admission_seconds"] == 300
        opens = datetime.fromisoformat(body["queue_opens_at"])
        assert abs((release - opens) - timedelta(minutes=15)) < timedelta(seconds=1)
        listed = (await client.get("/api/products", params={"q": "Defaults"})).json()["items"]
        assert {p["sale_mode"] for p in listed if p["id"] == body["id"]} == {"queue"}
        bad = [
            {"sale_mode": "queue", "queue_opens_at": (release + timedelta(minutes=1)).isoformat()},
            {"sale_mode": "fcfs", "admission_seconds": 60},
            {"sale_mode": "queue", "admission_seconds": 10},
            {"sale_mode": "raffle"},
        ]
        for extra in bad:
            r = await client.post(
                "/api/admin/products",
                json={**base, "name": "Bad", **extra},
                headers=admin,
            )
            assert r.status_code == 422, (extra, r.text)
            assert r.json()["code"] == "validation_error"


async def test_join_rules_and_one_ticket_per_buyer(orders_env: OrdersEnv) -> None:
    async with orders_env.client() as client:
        early, _ = await queue_drop(
            orders_env, client, 1, release_in=timedelta(hours=2), opens_in=timedelta(hours=1)
        )
        buyer = orders_env.buyer()
        r = await join(client, early["id"], buyer)
        assert (r.status_code, r.json()["code"]) == (409, "queue_not_open")
        fcfs, _ = await orders_env.drop(client, [1])
        r = await join(client, fcfs["id"], buyer)
        assert (r.status_code, r.json()["code"]) == (409, "not_queued")
        r = await join(client, early["id"], orders_env.buyer(verified=False))
        assert (r.status_code, r.json()["code"]) == (403, "email_not_verified")

        product, _ = await queue_drop(orders_env, client, 1, release_in=timedelta(hours=1))
        pid = product["id"]
        r = await client.get(f"/api/products/{pid}/queue/me", headers=buyer.auth)
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        # The same buyer joining many times at once still holds one ticket.
        answers = await asyncio.gather(*(join(client, pid, buyer) for _ in range(12)))
        assert sorted(a.status_code for a in answers).count(201) == 1
        assert {a.status_code for a in answers} <= {200, 201}
        assert len({a.json()["id"] for a in answers}) == 1
        mine = await ticket(client, pid, buyer)
        assert mine["id"] == answers[0].json()["id"]
        assert (mine["state"], mine["position"], mine["admission_token"]) == ("waiting", None, None)
        assert (await figures(orders_env, client, pid))["waiting"] == 1
        # Buyers are queued: the mode and its times are fixed now.
        r = await client.patch(
            f"/api/admin/products/{pid}",
            json={"admission_seconds": 600},
            headers=admin_headers(orders_env.settings),
        )
        assert (r.status_code, r.json()["code"]) == (409, "invalid_state")


async def test_admissions_follow_the_rank_never_exceed_the_stock_and_the_token_is_single_use(
    orders_env: OrdersEnv,
) -> None:
    async with orders_env.client() as client:
        product, item = await queue_drop(orders_env, client, 3, release_in=timedelta(seconds=3))
        pid = product["id"]
        buyers = [orders_env.buyer() for _ in range(12)]
        joined = await asyncio.gather(*(join(client, pid, b) for b in buyers))
        assert [r.status_code for r in joined] == [201] * 12
        r = await buy(orders_env, client, buyers[0], item["id"], None)
        assert r.status_code in (403, 409), r.text  # before the release: no admission anyway

        ranked = await eventually(lambda: places(orders_env, pid), lambda p: None not in p.values())
        assert sorted(ranked.values()) == list(range(1, 13))
        by_place = sorted(buyers, key=lambda b: ranked[b.id])
        tickets = await eventually(
            lambda: asyncio.gather(*(ticket(client, pid, b) for b in by_place)),
            lambda ts: [t["state"] for t in ts[:3]] == ["admitted"] * 3,
        )
        assert [t["state"] for t in tickets[3:]] == ["waiting"] * 9
        assert [t["position"] for t in tickets[3:]] == list(range(1, 10))
        first, second = by_place[0], by_place[1]
        token = tickets[0]["admission_token"]
        assert token
        assert tickets[0]["admitted_until"]

        # Without a token, with someone else's, a forged one: 403, and nothing is taken.
        for who, tok in ((first, None), (by_place[5], token), (first, token[:-2] + "xx")):
            r = await buy(orders_env, client, who, item["id"], tok)
            assert (r.status_code, r.json()["code"]) == (403, "admission_required"), r.text
        assert (await orders_env.ledger(item["id"]))["available"] == 3

        r = await buy(orders_env, client, first, item["id"], token)
        assert r.status_code == 201, r.text
        r = await buy(orders_env, client, first, item["id"], token)  # used: single use
        assert (r.status_code, r.json()["code"]) == (403, "admission_required")
        assert (await ticket(client, pid, first))["state"] == "used"

        # Another product's token does not open this one.
        _, other_item = await queue_drop(orders_env, client, 1, release_in=timedelta(0))
        r = await buy(orders_env, client, second, other_item["id"], tickets[1]["admission_token"])
        assert (r.status_code, r.json()["code"]) == (403, "admission_required")
        await asyncio.sleep(1)  # several outflow passes: still only 3 admissions for 3 pairs
        f = await figures(orders_env, client, pid)
        assert (f["admitted"], f["used"], f["waiting"]) == (2, 1, 9), f
        scrape = (await client.get(f"{orders_env.platform.url('products')}/metrics")).text
        for state, n in (("waiting", 9), ("admitted", 2), ("used", 1)):
            line = f'snapshoe_queue_tickets{{product_id="{pid}",state="{state}"}} {n}.0'
            assert line in scrape, (line, [x for x in scrape.splitlines() if pid in x])


async def test_a_lapsed_admission_or_a_returned_pair_admits_the_next_and_the_end_is_sold_out(
    orders_env: OrdersEnv,
) -> None:
    async with orders_env.client() as client:
        product, item = await queue_drop(orders_env, client, 1, release_in=timedelta(seconds=2))
        pid = product["id"]
        _, by_place = await queued_and_ranked(orders_env, client, pid, 4)
        await eventually(
            lambda: ticket(client, pid, by_place[0]), lambda t: t["state"] == "admitted"
        )
        # The first lets the admission lapse (its deadline moved into the past): the next is in.
        await lapse(orders_env, pid, by_place[0].id)
        await eventually(
            lambda: ticket(client, pid, by_place[0]), lambda t: t["state"] == "expired"
        )
        second = await eventually(
            lambda: ticket(client, pid, by_place[1]), lambda t: t["state"] == "admitted"
        )
        assert (await ticket(client, pid, by_place[2]))["position"] == 1
        # The second orders, then cancels: the pair is back and the third is admitted.
        r = await buy(orders_env, client, by_place[1], item["id"], second["admission_token"])
        assert r.status_code == 201, r.text
        order_id = r.json()["id"]
        assert (await ticket(client, pid, by_place[2]))["state"] == "waiting"
        r = await client.post(f"/api/orders/{order_id}/cancel", headers=by_place[1].auth)
        assert r.status_code == 200, r.text
        third = await eventually(
            lambda: ticket(client, pid, by_place[2]), lambda t: t["state"] == "admitted"
        )
        # The third buys and the pair is sold for good: the last waiting ticket is sold out.
        r = await buy(orders_env, client, by_place[2], item["id"], third["admission_token"])
        assert r.status_code == 201, r.text
        r = await client.post(
            f"{orders_env.platform.url('products')}/internal/reservations/{r.json()['id']}/commit",
            headers=orders_env.internal,
        )
        assert r.status_code == 200, r.text
        last = await eventually(
            lambda: ticket(client, pid, by_place[3]), lambda t: t["state"] == "sold_out"
        )
        assert last["position"] is None
        f = await figures(orders_env, client, pid)
        assert (f["state"], f["expired"], f["used"], f["sold_out"]) == ("ended", 1, 2, 1), f
        late = orders_env.buyer()
        r = await join(client, pid, late)
        assert (r.status_code, r.json()["code"]) == (409, "sold_out")


async def test_the_release_order_is_random_and_later_joins_queue_in_arrival_order(
    orders_env: OrdersEnv,
) -> None:
    """Over 240 early tickets, joined one after another, the place is independent of the join
    order: |Spearman rho| < 0.22 (about 3.4 standard errors at n = 240: a false alarm about
    once in 1,500 runs), and the first 60 joiners are spread over all four quarters of the
    ranking. Tickets taken after the release queue behind, in arrival order."""
    n = 240
    async with orders_env.client() as client:
        product, _ = await queue_drop(orders_env, client, 1, release_in=timedelta(seconds=25))
        pid = product["id"]
        buyers = [orders_env.buyer() for _ in range(n)]
        for b in buyers:  # one after another: join order is known
            assert (await join(client, pid, b)).status_code == 201
        ranked = await eventually(
            lambda: places(orders_env, pid), lambda p: None not in p.values(), timeout=40
        )
        order = [ranked[b.id] for b in buyers]
        rho = spearman([float(k) for k in range(n)], [float(p) for p in order])
        assert abs(rho) < 0.22, rho
        quarters = {(ranked[b.id] - 1) * 4 // n for b in buyers[:60]}
        assert quarters == {0, 1, 2, 3}, quarters
        late = [orders_env.buyer() for _ in range(5)]
        for b in late:
            assert (await join(client, pid, b)).status_code == 201
        after = await places(orders_env, pid)
        assert [after[b.id] for b in late] == list(range(n + 1, n + 6))


async def test_a_join_that_reaches_the_queue_after_the_release_time_is_not_shuffled_in(
    orders_env: OrdersEnv,
) -> None:
    """A join that began before ``release_at`` but reached the queue's row after it (waiting
    for a join slot or the row) is a late ticket: it queues behind the shuffled ones. It once
    drew a lottery number there, and bench queue found late tickets out of arrival order."""
    n = 30
    async with orders_env.client() as client:
        product, _ = await queue_drop(orders_env, client, 1, release_in=timedelta(seconds=6))
        pid = product["id"]
        release_at = datetime.fromisoformat(product["release_at"])
        for b in [orders_env.buyer() for _ in range(n)]:
            assert (await join(client, pid, b)).status_code == 201
        straggler = orders_env.buyer()
        async with orders_env.products_db.connect() as conn:
            held = await conn.begin()
            await conn.execute(
                text("SELECT * FROM queues WHERE product_id = :p FOR UPDATE"), {"p": pid}
            )
            joining = asyncio.create_task(join(client, pid, straggler))
            await asyncio.sleep(0.5)
            assert datetime.now(UTC) < release_at  # it asked before the release time
            await asyncio.sleep((release_at - datetime.now(UTC)).total_seconds() + 0.5)
            await held.rollback()
        assert (await joining).status_code == 201
        ranked = await eventually(lambda: places(orders_env, pid), lambda p: None not in p.values())
        assert ranked[straggler.id] == n + 1, ranked[straggler.id]


async def _ticket_events(
    client: httpx.AsyncClient, pid: str, buyer: Buyer, into: list[dict[str, Any]]
) -> str:
    """Reads the buyer's ticket stream into ``into`` until the server ends it."""
    url = f"/api/products/{pid}/queue/me/events"
    async with client.stream("GET", url, headers=buyer.auth, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "ticket":
                into.append(orjson.loads(line.removeprefix("data: ")))
    return "ended"


async def test_the_ticket_stream_follows_the_ticket_to_its_end(orders_env: OrdersEnv) -> None:
    async with orders_env.client() as client:
        product, item = await queue_drop(orders_env, client, 1, release_in=timedelta(seconds=3))
        pid = product["id"]
        a, b = orders_env.buyer(), orders_env.buyer()
        r = await client.get(f"/api/products/{pid}/queue/me/events", headers=a.auth)
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        for buyer in (a, b):
            assert (await join(client, pid, buyer)).status_code == 201
        ranked = await eventually(lambda: places(orders_env, pid), lambda p: None not in p.values())
        first, second = sorted((a, b), key=lambda x: ranked[x.id])
        seen: list[dict[str, Any]] = []
        reader = asyncio.create_task(_ticket_events(client, pid, second, seen))
        await eventually(lambda: _now(seen), lambda s: bool(s) and s[-1]["position"] == 1)
        assert seen[-1]["state"] == "waiting"
        await lapse(orders_env, pid, first.id)
        admitted = await eventually(
            lambda: _now(seen), lambda s: s[-1]["state"] == "admitted", timeout=10
        )
        token = admitted[-1]["admission_token"]
        assert token
        r = await buy(orders_env, client, second, item["id"], token)
        assert r.status_code == 201, r.text
        assert await asyncio.wait_for(reader, 10) == "ended"  # final: the server closed it
        states = [t["state"] for t in seen]
        assert states[-2:] == ["admitted", "used"], states
        assert seen[-1]["admission_token"] is None


async def _now(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(seen)


async def test_a_redis_flush_mid_queue_loses_no_place_and_admits_nobody_twice(
    orders_env: OrdersEnv,
) -> None:
    """The queue's state is in the products database; Redis carries only the stock gate
    (rebuilt from the ledger) and the live updates. Emptied mid-queue, it changes nothing."""
    async with orders_env.client() as client:
        product, item = await queue_drop(orders_env, client, 2, release_in=timedelta(seconds=2))
        pid = product["id"]
        ranked, by_place = await queued_and_ranked(orders_env, client, pid, 6)
        await eventually(
            lambda: figures(orders_env, client, pid), lambda f: f["admitted"] == 2, timeout=10
        )
        before = await asyncio.gather(*(ticket(client, pid, b) for b in by_place))
        redis = Redis.from_url(orders_env.settings.redis_url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()
        await asyncio.sleep(1.5)  # several outflow passes over an empty Redis
        assert await places(orders_env, pid) == ranked
        after = await asyncio.gather(*(ticket(client, pid, b) for b in by_place))
        assert [t["state"] for t in after] == [t["state"] for t in before]
        assert [t["state"] for t in after] == ["admitted"] * 2 + ["waiting"] * 4
        assert (await figures(orders_env, client, pid))["admitted"] == 2
        r = await eventually(
            lambda: buy(orders_env, client, by_place[0], item["id"], after[0]["admission_token"]),
            lambda r: r.status_code != 503,  # the gate is rebuilt from the ledger first
        )
        assert r.status_code == 201, r.text
        assert (await orders_env.ledger(item["id"]))["available"] == 1


async def test_a_minimum_account_age_turns_away_accounts_made_for_the_drop(
    orders_env: OrdersEnv,
) -> None:
    """A products process with SNAPSHOE_QUEUE_MIN_ACCOUNT_AGE_SECONDS set (one hour), against
    the platform's databases and users service: an account made a minute ago is refused, the
    same account made two days before is let in, a minted token with no account is refused."""
    async with orders_env.client() as client:
        product, _ = await queue_drop(orders_env, client, 1, release_in=timedelta(hours=1))
        user = await orders_env.platform.verified_user(client)
    app = create_products_app(
        orders_env.settings.model_copy(update={"queue_min_account_age_seconds": 3600})
    )
    auth = {"Authorization": f"Bearer {user.access_token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://products") as direct:
            url = f"/api/products/{product['id']}/queue"
            r = await direct.post(url, headers=auth)
            assert (r.status_code, r.json()["code"]) == (403, "account_too_new"), r.text
            r = await direct.post(url, headers=orders_env.buyer().auth)
            assert (r.status_code, r.json()["code"]) == (403, "account_too_new"), r.text
            users_db = create_async_engine(orders_env.settings.database_url("users"))
            try:
                async with users_db.begin() as conn:
                    await conn.execute(
                        text("UPDATE users SET created_at = NOW(6) - INTERVAL 2 DAY WHERE id = :i"),
                        {"i": user.id},
                    )
            finally:
                await users_db.dispose()
            r = await direct.post(url, headers=auth)
            assert r.status_code == 201, r.text


async def test_a_waiting_stream_gets_heartbeats_and_outlives_the_gateways_idle_timeouts(
    orders_env: OrdersEnv,
) -> None:
    """Held 35 s through the gateway (whose client and server idle timeouts are 30 s), a
    stream of a ticket that does not change stays open on its heartbeats, at most 15 s apart,
    and tells the client when to reconnect should it be cut."""
    async with orders_env.client() as client:
        product, _ = await queue_drop(orders_env, client, 1, release_in=timedelta(hours=1))
        buyer = orders_env.buyer()
        assert (await join(client, product["id"], buyer)).status_code == 201
        url = f"/api/products/{product['id']}/queue/me/events"
        beats: list[float] = []
        retries: list[int] = []
        frames = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with client.stream("GET", url, headers=buyer.auth, timeout=60) as r:
            assert r.status_code == 200
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(35):
                    async for line in r.aiter_lines():
                        if line.startswith(":"):
                            beats.append(loop.time() - start)
                        elif line.startswith("event: ticket"):
                            frames += 1
                        elif line.startswith("retry: "):
                            retries.append(int(line.removeprefix("retry: ")))
            assert not r.is_closed  # the server did not end it; the test stopped reading
        assert frames == 1  # the ticket once, then nothing changed
        # An EventSource cut off reconnects after this: a spread, so a crowd cut at once
        # does not come back at one instant.
        assert len(retries) == 1, retries
        assert 3000 <= retries[0] <= 10000, retries
        assert len(beats) >= 2, beats
        gaps = [b - a for a, b in zip([0.0, *beats], beats, strict=False)]
        assert max(gaps) <= 16, gaps


async def test_one_admission_opens_one_order_even_when_spent_many_times_at_once(
    orders_env: OrdersEnv,
) -> None:
    async with orders_env.client() as client:
        product, item = await queue_drop(orders_env, client, 5, release_in=timedelta(seconds=2))
        pid = product["id"]
        _, (first, *_) = await queued_and_ranked(orders_env, client, pid, 1)
        admitted = await eventually(
            lambda: ticket(client, pid, first), lambda t: t["state"] == "admitted"
        )
        token = admitted["admission_token"]
        answers = await asyncio.gather(
            *(buy(orders_env, client, first, item["id"], token) for _ in range(12))
        )
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [403] * 11, [(r.status_code, r.text) for r in answers]
        assert {r.json()["code"] for r in answers if r.status_code == 403} == {"admission_required"}
        assert (await orders_env.ledger(item["id"]))["reserved"] == 1


async def test_a_refused_order_gives_the_admission_back_and_its_answer_is_not_kept(
    orders_env: OrdersEnv,
) -> None:
    """Two sizes of one pair each, two buyers admitted: when the second asks for the size the
    first just bought (sold out), the admission is theirs again and buys the other size; a
    403 without the token is not kept under its Idempotency-Key."""
    async with orders_env.client() as client:
        product, _ = await queue_drop(
            orders_env, client, 1, release_in=timedelta(seconds=2), sizes=2
        )
        pid, (size_a, size_b) = product["id"], product["items"]
        _, (first, second) = await queued_and_ranked(orders_env, client, pid, 2)
        tickets = await eventually(
            lambda: asyncio.gather(ticket(client, pid, first), ticket(client, pid, second)),
            lambda ts: [t["state"] for t in ts] == ["admitted", "admitted"],
        )
        r = await buy(orders_env, client, first, size_a["id"], tickets[0]["admission_token"])
        assert r.status_code == 201, r.text
        r = await buy(orders_env, client, second, size_a["id"], tickets[1]["admission_token"])
        assert (r.status_code, r.json()["code"]) == (409, "sold_out"), r.text
        assert (await ticket(client, pid, second))["state"] == "admitted"
        same_key = key()
        body = {"lines": [{"item_id": size_b["id"], "quantity": 1}]}
        r = await client.post(
            "/api/orders", json=body, headers={**second.auth, "Idempotency-Key": same_key}
        )
        assert (r.status_code, r.json()["code"]) == (403, "admission_required")
        r = await client.post(
            "/api/orders",
            json=body,
            headers={
                **second.auth,
                "Idempotency-Key": same_key,
                "Admission-Token": tickets[1]["admission_token"],
            },
        )
        assert r.status_code == 201, r.text
        assert "idempotent-replayed" not in r.headers
        assert (await ticket(client, pid, second))["state"] == "used"


async def test_a_queue_product_sold_with_row_locks_still_needs_an_admission(
    orders_env: OrdersEnv,
) -> None:
    """The waiting room is checked before either stock mode (the db_lock baseline included)."""
    async with orders_env.client() as client:
        product, item = await queue_drop(
            orders_env, client, 2, release_in=timedelta(seconds=1), stock_mode="db_lock"
        )
        pid = product["id"]
        _, (queued,) = await queued_and_ranked(orders_env, client, pid, 1)
        admitted = await eventually(
            lambda: ticket(client, pid, queued), lambda t: t["state"] == "admitted"
        )
        r = await buy(orders_env, client, orders_env.buyer(), item["id"], None)
        assert (r.status_code, r.json()["code"]) == (403, "admission_required"), r.text
        r = await buy(orders_env, client, queued, item["id"], admitted["admission_token"])
        assert r.status_code == 201, r.text
