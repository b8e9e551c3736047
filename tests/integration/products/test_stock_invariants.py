"""The stock ledger and the Redis gate under a stampede, against the real service.

Invariants, checked after every scenario (:func:`check_invariants`):

1. Ledger arithmetic: for every item ``initial = sold + reserved + available`` and each of
   ``sold``, ``reserved``, ``available`` is >= 0 (the DB CHECK makes any violation an error,
   this re-reads it).
2. The ledger matches the reservations: per item, ``reserved`` = units in ACTIVE reservations
   and ``sold`` = units in COMMITTED ones; RELEASED ones hold nothing.
3. No oversell: per item, ``sold + reserved <= initial`` (follows from 1, checked per scenario
   against the stock the test put in).
4. No half reservation: every reservation has all the lines it was asked for, and none exists
   without lines, except the tombstone of an id released before it was reserved (RELEASED,
   no buyer, no lines, holds nothing).
5. Per-buyer limit: for every product with ``per_user_limit > 0``, no buyer holds more units
   than the limit in ACTIVE + COMMITTED reservations.
6. Gate = ledger: once the service is idle, the gate's available units per item and held units
   per (product, buyer) equal the ledger's (``/internal/gate/reconcile`` finds no difference).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from tests.integration.products.conftest import ProductsEnv

pytestmark = __import__("pytest").mark.slow


async def check_invariants(env: ProductsEnv, client: httpx.AsyncClient) -> None:
    async with env.db.connect() as conn:
        items = (
            await conn.execute(text("SELECT id, initial, sold, reserved, available FROM items"))
        ).all()
        by_state = (
            await conn.execute(
                text(
                    "SELECT l.item_id, r.state, SUM(l.quantity) FROM reservation_lines l "
                    "JOIN reservations r ON r.id = l.reservation_id GROUP BY l.item_id, r.state"
                )
            )
        ).all()
        lineless = (
            await conn.execute(
                text(
                    "SELECT COUNT(*) FROM reservations r WHERE NOT EXISTS "
                    "(SELECT 1 FROM reservation_lines l WHERE l.reservation_id = r.id) "
                    "AND NOT (r.state = 'RELEASED' AND r.buyer_id = '')"
                )
            )
        ).scalar_one()
        over_limit = (
            await conn.execute(
                text(
                    "SELECT p.id, r.buyer_id, SUM(l.quantity) AS units, p.per_user_limit "
                    "FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id "
                    "JOIN products p ON p.id = l.product_id "
                    "WHERE r.state IN ('ACTIVE', 'COMMITTED') AND p.per_user_limit > 0 "
                    "GROUP BY p.id, r.buyer_id, p.per_user_limit "
                    "HAVING SUM(l.quantity) > p.per_user_limit"
                )
            )
        ).all()
    units: dict[tuple[str, str], int] = defaultdict(int)
    for item_id, state, qty in by_state:
        units[(item_id, state)] = int(qty)
    for item_id, initial, sold, reserved, available in items:
        assert initial == sold + reserved + available, item_id  # 1
        assert min(sold, reserved, available) >= 0, item_id  # 1
        assert reserved == units[(item_id, "ACTIVE")], item_id  # 2
        assert sold == units[(item_id, "COMMITTED")], item_id  # 2
    assert lineless == 0  # 4
    assert over_limit == []  # 5
    r = await client.post("/internal/gate/reconcile", headers=env.internal)  # 6
    assert r.status_code == 200, r.text
    assert r.json()["differences"] == [], r.json()


def rid() -> str:
    return "ord_" + secrets.token_urlsafe(12)


async def ledger_batches(client: httpx.AsyncClient) -> tuple[float, float, float]:
    """(batches, reservations in them, whole batches refused) from products' /metrics."""
    text_ = (await client.get("/metrics")).text
    found = {"count": 0.0, "sum": 0.0, "fallbacks": 0.0}
    for line in text_.splitlines():
        if line.startswith('snapshoe_group_commit_batch_size_count{name="products_ledger"}'):
            found["count"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('snapshoe_group_commit_batch_size_sum{name="products_ledger"}'):
            found["sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("snapshoe_products_ledger_batch_fallbacks_total "):
            found["fallbacks"] = float(line.rsplit(" ", 1)[1])
    return found["count"], found["sum"], found["fallbacks"]


async def test_thousand_buyers_three_items_of_fifty(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Stampede 1000")
    items = [await env.item(client, product["id"], 50, size=250 + 5 * i) for i in range(3)]
    ids = [i["id"] for i in items]
    rng = random.Random(1)
    picks = [ids[rng.randrange(3)] for _ in range(1000)]
    batches0, written0, _ = await ledger_batches(client)

    results = await asyncio.gather(
        *(env.reserve(client, rid(), f"buyer-{n}", [(item, 1)]) for n, item in enumerate(picks))
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 150, 409: 850}, statuses
    batches, written, _ = await ledger_batches(client)
    # Every admission went through the group commit once, and they went in shared batches.
    assert written - written0 == 150
    assert batches - batches0 < 150
    won = Counter(r.json()["lines"][0]["item_id"] for r in results if r.status_code == 201)
    assert won == {i: 50 for i in ids}  # each item sold out exactly, not one unit more
    for r in results:
        if r.status_code == 409:
            assert r.json()["code"] == "sold_out"
            assert r.headers["content-type"].startswith("application/problem+json")
    for i in ids:
        assert await env.ledger(i) == {"initial": 50, "sold": 0, "reserved": 50, "available": 0}
        assert await env.gate_available(product["id"], i) == 0
    detail = (await client.get(f"/api/products/{product['id']}")).json()
    assert detail["status"] == "sold_out"
    assert [i["stock_remaining"] for i in detail["items"]] == [0, 0, 0]
    await check_invariants(env, client)


async def test_multi_line_reservations_are_all_or_nothing(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Multi line")
    other = await env.product(client, name="Multi line, second product")
    a = (await env.item(client, product["id"], 30, size=260))["id"]
    b = (await env.item(client, product["id"], 100, size=265))["id"]
    c = (await env.item(client, other["id"], 45, size=270))["id"]
    rng = random.Random(2)
    shapes = [[(a, 1), (b, 2)], [(b, 1), (c, 1)], [(a, 1), (b, 1), (c, 2)], [(c, 1)]]
    wanted = {}
    tasks = []
    for n in range(400):
        lines = shapes[rng.randrange(len(shapes))]
        r_id = rid()
        wanted[r_id] = lines
        tasks.append(env.reserve(client, r_id, f"mbuyer-{n}", lines))
    results = await asyncio.gather(*tasks)

    taken: Counter[str] = Counter()
    for r in results:
        assert r.status_code in (201, 409), r.text
        if r.status_code == 201:
            body = r.json()
            got = sorted((x["item_id"], x["quantity"]) for x in body["lines"])
            assert got == sorted(wanted[body["reservation_id"]])
            for item_id, qty in got:
                taken[item_id] += qty
        else:
            assert r.json()["code"] == "sold_out"
            assert set(r.json()["item_ids"]) <= {a, b, c}
    # What the successful reservations took is exactly what left the shelf, item by item:
    # a refused reservation took nothing from any of its lines.
    for item_id, stock in ((a, 30), (b, 100), (c, 45)):
        ledger = await env.ledger(item_id)
        assert ledger["reserved"] == taken[item_id]
        assert ledger["available"] == stock - taken[item_id] >= 0
    async with env.db.connect() as conn:
        stored = (
            await conn.execute(
                text(
                    "SELECT reservation_id, COUNT(*) FROM reservation_lines "
                    "WHERE item_id IN (:a, :b, :c) GROUP BY reservation_id"
                ),
                {"a": a, "b": b, "c": c},
            )
        ).all()
    for r_id, count in stored:
        assert count == len(wanted[r_id])
    await check_invariants(env, client)


async def test_one_buyer_fifty_concurrent_on_a_limit_one_drop_gets_one(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Limit one", per_user_limit=1)
    sizes = [(await env.item(client, product["id"], 100, size=s))["id"] for s in (260, 270)]
    rids = [rid() for _ in range(50)]
    results = await asyncio.gather(
        *(env.reserve(client, r_id, "greedy", [(sizes[n % 2], 1)]) for n, r_id in enumerate(rids))
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 1, 409: 49}, statuses
    assert {r.json()["code"] for r in results if r.status_code == 409} == {
        "purchase_limit_exceeded"
    }
    won = next(r.json() for r in results if r.status_code == 201)
    # Committed units still count; a second item of the same product is refused too.
    assert (await env.commit(client, won["reservation_id"])).status_code == 200
    again = await env.reserve(client, rid(), "greedy", [(sizes[0], 1)])
    assert again.status_code == 409
    assert again.json()["code"] == "purchase_limit_exceeded"
    # Another buyer is not affected, and asking for 2 at once is over the limit too.
    assert (await env.reserve(client, rid(), "patient", [(sizes[0], 1)])).status_code == 201
    two = await env.reserve(client, rid(), "eager", [(sizes[0], 1), (sizes[1], 1)])
    assert two.status_code == 409
    assert two.json()["code"] == "purchase_limit_exceeded"
    # A refund gives the allowance back.
    assert (await env.release(client, won["reservation_id"])).json()["refunded"] is True
    assert (await env.reserve(client, rid(), "greedy", [(sizes[1], 1)])).status_code == 201
    await check_invariants(env, client)


async def test_reserve_release_commit_are_idempotent(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Idempotent")
    item = (await env.item(client, product["id"], 10))["id"]
    pid = product["id"]

    # The same reservation id sent 20 times at once takes stock once.
    first = rid()
    results = await asyncio.gather(
        *(env.reserve(client, first, "idem", [(item, 2)]) for _ in range(20))
    )
    assert all(r.status_code in (200, 201) for r in results), [r.text for r in results]
    assert sum(r.status_code == 201 for r in results) == 1
    assert {r.json()["reservation_id"] for r in results} == {first}
    assert await env.ledger(item) == {"initial": 10, "sold": 0, "reserved": 2, "available": 8}
    assert await env.gate_available(pid, item) == 8

    # Reserve again later: the first result, no more stock.
    replay = await env.reserve(client, first, "idem", [(item, 2)])
    assert replay.status_code == 200
    assert replay.json()["changed"] is False
    assert replay.json()["state"] == "ACTIVE"
    # Same id, other lines: refused, nothing changes.
    reused = await env.reserve(client, first, "idem", [(item, 3)])
    assert reused.status_code == 409
    assert reused.json()["code"] == "reservation_id_reused"

    # Released twice (also concurrently): restores once.
    releases = await asyncio.gather(*(env.release(client, first) for _ in range(10)))
    assert all(r.status_code == 200 for r in releases)
    assert sum(r.json()["changed"] for r in releases) == 1
    assert await env.ledger(item) == {"initial": 10, "sold": 0, "reserved": 0, "available": 10}
    assert await env.gate_available(pid, item) == 10
    # A replay of the released reservation returns it; it does not take stock again.
    after = await env.reserve(client, first, "idem", [(item, 2)])
    assert after.status_code == 200
    assert after.json()["state"] == "RELEASED"
    assert await env.ledger(item) == {"initial": 10, "sold": 0, "reserved": 0, "available": 10}
    # Commit of a released reservation is refused.
    late = await env.commit(client, first)
    assert late.status_code == 409
    assert late.json()["code"] == "reservation_released"

    # Commit twice: sold once. Release after commit (refund): restores once.
    second = rid()
    assert (await env.reserve(client, second, "idem2", [(item, 3)])).status_code == 201
    commits = await asyncio.gather(*(env.commit(client, second) for _ in range(5)))
    assert [r.status_code for r in commits] == [200] * 5
    assert sum(r.json()["changed"] for r in commits) == 1
    assert await env.ledger(item) == {"initial": 10, "sold": 3, "reserved": 0, "available": 7}
    refunds = await asyncio.gather(*(env.release(client, second) for _ in range(5)))
    assert sum(r.json()["changed"] for r in refunds) == 1
    assert all(r.json()["refunded"] for r in refunds)
    assert await env.ledger(item) == {"initial": 10, "sold": 0, "reserved": 0, "available": 10}
    assert await env.gate_available(pid, item) == 10
    await check_invariants(env, client)


async def test_release_before_reserve_leaves_no_orphan(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    """Orders gives up on a reserve under load and releases its id at once; the reserve may
    reach products after that release. It must not hold pairs nobody will pay for."""
    env = products_env
    product = await env.product(client, name="Tombstone")
    item = (await env.item(client, product["id"], 100))["id"]
    pid = product["id"]

    late = rid()
    gone = await env.release(client, late)
    assert gone.status_code == 404  # unknown, as before, but the id is now spent
    refused = await env.reserve(client, late, "slow", [(item, 1)])
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "reservation_released"
    assert await env.ledger(item) == {"initial": 100, "sold": 0, "reserved": 0, "available": 100}
    assert await env.gate_available(pid, item) == 100
    # For everything else the spent id is still no reservation.
    assert (await env.commit(client, late)).status_code == 404
    assert (await env.release(client, late)).status_code == 404

    # 60 releases racing their own reserves: whichever lands first, nothing stays held.
    ids = [rid() for _ in range(60)]

    async def race(i: int, r: str) -> None:
        calls = [env.reserve(client, r, f"racer{i}", [(item, 1)]), env.release(client, r)]
        await asyncio.gather(*(calls if i % 2 else calls[::-1]))

    await asyncio.gather(*(race(i, r) for i, r in enumerate(ids)))
    # A release that lost the race to its own reserve found nothing yet and left a tombstone
    # only if the reserve had not written; a reserve that came second was refused. Either way
    # the pair is free again, or still reserved only by a reservation that exists (and that a
    # second release now frees).
    await asyncio.gather(*(env.release(client, r) for r in ids))
    assert await env.ledger(item) == {"initial": 100, "sold": 0, "reserved": 0, "available": 100}
    assert await env.gate_available(pid, item) == 100
    await check_invariants(env, client)


async def test_redis_flushed_in_the_middle_of_a_burst(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    """FLUSHDB of the test Redis db while reservations and releases are in flight: the gate is
    rebuilt from the ledger, and afterwards no unit is lost or created."""
    env = products_env
    assert env.redis.connection_pool.connection_kwargs.get("db") in range(10, 16)  # a test db
    product = await env.product(client, name="Flush", per_user_limit=2)
    items = [(await env.item(client, product["id"], 40, size=s))["id"] for s in (250, 255, 260)]
    rng = random.Random(3)
    released: list[str] = []
    won: list[dict[str, Any]] = []

    async def buyer(n: int) -> httpx.Response:
        await asyncio.sleep(rng.random() * 1.5)
        lines = [(items[rng.randrange(3)], 1)]
        r = await env.reserve(client, rid(), f"fbuyer-{n % 120}", lines)
        if r.status_code == 201:
            won.append(r.json())
            if n % 4 == 0:  # some buyers give up at once: releases interleave with the flush
                rel = await env.release(client, r.json()["reservation_id"])
                assert rel.status_code == 200, rel.text
                released.append(r.json()["reservation_id"])
        return r

    async def epoch() -> int:
        async with env.db.connect() as conn:
            return int((await conn.execute(text("SELECT epoch FROM gate_state"))).scalar_one())

    epoch_before = await epoch()

    async def flusher() -> None:
        for _ in range(3):
            await asyncio.sleep(0.4)
            await env.redis.flushdb()

    results, _ = await asyncio.gather(asyncio.gather(*(buyer(n) for n in range(500))), flusher())
    assert await epoch() > epoch_before, "the gate was never rebuilt"
    codes = Counter(r.json().get("code") for r in results if r.status_code != 201)
    assert set(codes) <= {"sold_out", "purchase_limit_exceeded"}, codes
    assert won, "nobody got a pair"
    held = Counter(x["lines"][0]["item_id"] for x in won if x["reservation_id"] not in released)
    for item_id in items:
        ledger = await env.ledger(item_id)
        assert ledger["initial"] == 40
        assert ledger["reserved"] == held[item_id]  # every admitted, unreleased unit is held
        assert ledger["available"] == 40 - held[item_id]  # and every other unit is on the shelf
        assert await env.gate_available(product["id"], item_id) == ledger["available"]
    await check_invariants(env, client)


async def test_admin_correction_never_below_sold_or_reserved(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Correction")
    pid = product["id"]
    item = (await env.item(client, pid, 10))["id"]
    r1, r2 = rid(), rid()
    assert (await env.reserve(client, r1, "c1", [(item, 2)])).status_code == 201
    assert (await env.reserve(client, r2, "c2", [(item, 2)])).status_code == 201
    assert (await env.commit(client, r1)).status_code == 200
    assert await env.ledger(item) == {"initial": 10, "sold": 2, "reserved": 2, "available": 6}

    async def patch(delta: int) -> httpx.Response:
        return await client.patch(
            f"/api/admin/items/{item}", json={"stock_delta": delta}, headers=env.admin
        )

    too_far = await patch(-7)
    assert too_far.status_code == 409
    assert too_far.json()["code"] == "stock_below_committed"
    assert await env.ledger(item) == {"initial": 10, "sold": 2, "reserved": 2, "available": 6}
    ok = await patch(-6)
    assert ok.status_code == 200
    counts = {k: ok.json()[k] for k in ("initial", "sold", "reserved", "available")}
    assert counts == {"initial": 4, "sold": 2, "reserved": 2, "available": 0}
    assert (await patch(-1)).status_code == 409
    assert (await patch(3)).status_code == 200
    assert await env.gate_available(pid, item) == 3
    # Twenty concurrent corrections of -1 on 3 available: exactly 3 succeed.
    results = await asyncio.gather(*(patch(-1) for _ in range(20)))
    assert Counter(r.status_code for r in results) == {200: 3, 409: 17}
    assert await env.ledger(item) == {"initial": 4, "sold": 2, "reserved": 2, "available": 0}
    assert await env.gate_available(pid, item) == 0
    sold_out = await env.reserve(client, rid(), "c3", [(item, 1)])
    assert sold_out.json()["code"] == "sold_out"
    # Corrections racing reservations: never below zero, and the gate follows.
    assert (await patch(20)).status_code == 200
    mixed = await asyncio.gather(
        *(patch(-1) for _ in range(15)),
        *(env.reserve(client, rid(), f"m{n}", [(item, 1)]) for n in range(15)),
    )
    took = sum(r.status_code == 201 for r in mixed)
    cut = sum(r.status_code == 200 for r in mixed)
    ledger = await env.ledger(item)
    assert ledger["available"] == 20 - took - cut >= 0
    assert ledger["initial"] == 24 - cut
    await check_invariants(env, client)


async def test_sweeper_releases_expired_reservations(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    from snapshoe.products.bootstrap import open_deps
    from snapshoe.products.reservations import sweep_expired

    env = products_env
    product = await env.product(client, name="Sweeper", per_user_limit=1)
    item = (await env.item(client, product["id"], 5))["id"]
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired, live, paid = rid(), rid(), rid()
    assert (await env.reserve(client, expired, "s1", [(item, 1)], until=past)).status_code == 201
    assert (await env.reserve(client, live, "s2", [(item, 1)])).status_code == 201
    assert (await env.reserve(client, paid, "s3", [(item, 1)], until=past)).status_code == 201
    assert (await env.commit(client, paid)).status_code == 200
    async with open_deps(env.settings) as deps:
        # The platform's own sweeper runs too and may get there first: either way the expired
        # reservation is released exactly once, and a second pass finds nothing.
        await sweep_expired(deps, grace=timedelta(seconds=60))
        assert await sweep_expired(deps, grace=timedelta(seconds=60)) == 0
    states = {
        r_id: (await client.get(f"/internal/reservations/{r_id}", headers=env.internal)).json()[
            "state"
        ]
        for r_id in (expired, live, paid)
    }
    assert states == {expired: "RELEASED", live: "ACTIVE", paid: "COMMITTED"}
    assert await env.ledger(item) == {"initial": 5, "sold": 1, "reserved": 1, "available": 3}
    # The allowance came back with the units.
    assert (await env.reserve(client, rid(), "s1", [(item, 1)])).status_code == 201
    await check_invariants(env, client)


async def test_reconcile_repairs_a_tampered_gate(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    from snapshoe.products.workers import reconcile

    env = products_env
    product = await env.product(client, name="Tampered")
    item = (await env.item(client, product["id"], 7))["id"]
    key = f"{env.settings.namespace}:pgate:{{{product['id']}}}:avail"
    await env.redis.hset(key, item, 100)  # a gate that would oversell
    report = await reconcile(env.settings)
    assert report.repaired
    assert {
        "product_id": product["id"],
        "kind": "available",
        "item_id": item,
        "ledger": 7,
        "gate": 100,
    } in report.differences
    assert await env.gate_available(product["id"], item) == 7
    again = await reconcile(env.settings)
    assert (again.repaired, again.differences) == (False, [])
    await check_invariants(env, client)


async def test_a_ledger_batch_refused_by_an_over_counting_gate_is_written_one_by_one(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    """The gate says 40 but the ledger has 10: the gate admits 40 at once, their batches are
    refused as a whole by the ledger's conditional update, and written alone each admission
    gets the ledger's own answer: exactly 10 reservations, 30 refusals, no unit lost."""
    from snapshoe.products.workers import reconcile

    env = products_env
    product = await env.product(client, name="Over-counting gate")
    item = (await env.item(client, product["id"], 10))["id"]
    await env.redis.hset(f"{env.settings.namespace}:pgate:{{{product['id']}}}:avail", item, 40)
    _, _, fallbacks0 = await ledger_batches(client)

    results = await asyncio.gather(
        *(env.reserve(client, rid(), f"buyer-{n}", [(item, 1)]) for n in range(40))
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 10, 409: 30}, statuses
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"sold_out"}
    _, _, fallbacks = await ledger_batches(client)
    assert fallbacks > fallbacks0
    assert await env.ledger(item) == {"initial": 10, "sold": 0, "reserved": 10, "available": 0}
    # The refused admissions were given back to the gate, which still holds the tampered 30.
    assert await env.gate_available(product["id"], item) == 30
    await reconcile(env.settings)
    assert await env.gate_available(product["id"], item) == 0
    await check_invariants(env, client)


def test_redis_client_is_not_db0(products_env: ProductsEnv) -> None:
    assert isinstance(products_env.redis, Redis)
    assert products_env.redis.connection_pool.connection_kwargs.get("db") != 0
