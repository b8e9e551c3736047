"""Draws end to end through the gateway: the sale-mode fields, entries (one per buyer, one per
card, windows, withdrawal, billing keys checked at the PG), the draw (seed revealed, ranking
recomputable), charges in rank order with a declined card passing the pair on and a lost
answer resolved by the reconciler, winners' orders, and the ledger (docs/draws.md)."""

from __future__ import annotations

import asyncio
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from tests.integration.orders.helpers import Buyer, OrdersEnv, admin_headers
from tests.support.waiting import eventually

from snapshoe.kernel.draw_ranking import commitment_of, rank, verify
from snapshoe.products import draw_verify

APPROVE, DECLINE, LOST = "4330123412340000", "4330123412340002", "4330123412340009"


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def draw_drop(
    env: OrdersEnv,
    client: httpx.AsyncClient,
    stocks: list[int],
    *,
    opens_in: timedelta = timedelta(minutes=-1),
    closes_in: timedelta = timedelta(hours=1),
    draw_in: timedelta | None = None,
    **product: Any,
) -> dict[str, Any]:
    """A draw-mode product with one item per stock (sizes 260, 265...), its ``items``."""
    admin = admin_headers(env.settings)
    r = await client.post(
        "/api/admin/products",
        json={
            "name": f"Draw {secrets.token_hex(3)}",
            "brand": "SnapTest",
            "price": 250_000,
            "release_at": _at(opens_in),
            "sale_mode": "draw",
            "entry_opens_at": _at(opens_in),
            "entry_closes_at": _at(closes_in),
            "draw_at": _at(draw_in if draw_in is not None else closes_in),
            **product,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    created["items"] = []
    for n, stock in enumerate(stocks):
        r = await client.post(
            f"/api/admin/products/{created['id']}/items",
            json={"size": 260 + 5 * n, "color": "White", "stock": stock},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        created["items"].append(r.json())
    return created


async def billing_key(client: httpx.AsyncClient, buyer: Buyer, card: str = APPROVE) -> str:
    """What a buyer's browser gets from the PG's card window (the sandbox in tests)."""
    r = await client.post(
        "/pg/v1/billing/authorizations/card",
        json={
            "customerKey": buyer.id,
            "cardNumber": card,
            "cardExpirationYear": "30",
            "cardExpirationMonth": "12",
        },
    )
    assert r.status_code == 200, r.text
    return str(r.json()["billingKey"])


async def enter(
    client: httpx.AsyncClient, pid: str, buyer: Buyer, item_id: str, key: str
) -> httpx.Response:
    return await client.post(
        f"/api/products/{pid}/entries",
        json={"item_id": item_id, "billing_key": key},
        headers=buyer.auth,
    )


async def my_entry(client: httpx.AsyncClient, pid: str, buyer: Buyer) -> dict[str, Any]:
    r = await client.get(f"/api/products/{pid}/entries/me", headers=buyer.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def published(client: httpx.AsyncClient, pid: str) -> dict[str, Any]:
    r = await client.get(f"/api/products/{pid}/draw")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_draw_fields_are_validated_and_the_commitment_is_public_from_the_start(
    orders_env: OrdersEnv,
) -> None:
    async with orders_env.client() as client:
        admin = admin_headers(orders_env.settings)
        base = {"name": "Bad draw", "brand": "SnapTest", "price": 1000, "sale_mode": "draw"}
        for wrong in (
            {"release_at": _at(timedelta(0))},  # no entry window
            {
                "release_at": _at(timedelta(0)),
                "entry_opens_at": _at(timedelta(hours=2)),
                "entry_closes_at": _at(timedelta(hours=1)),
                "draw_at": _at(timedelta(hours=3)),
            },
            {
                "release_at": _at(timedelta(hours=5)),  # the drop opens after the draw
                "entry_opens_at": _at(timedelta(0)),
                "entry_closes_at": _at(timedelta(hours=1)),
                "draw_at": _at(timedelta(hours=2)),
            },
        ):
            r = await client.post("/api/admin/products", json={**base, **wrong}, headers=admin)
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "validation_error"
        r = await client.post(
            "/api/admin/products",
            json={
                **base,
                "sale_mode": "fcfs",
                "release_at": _at(timedelta(0)),
                "draw_at": _at(timedelta(hours=1)),
            },
            headers=admin,
        )
        assert r.status_code == 422, r.text

        product = await draw_drop(orders_env, client, [1])
        detail = (await client.get(f"/api/products/{product['id']}")).json()
        assert detail["sale_mode"] == "draw"
        assert detail["entry_closes_at"] is not None
        assert detail["draw_at"] is not None
        draw = await published(client, product["id"])
        assert draw["state"] == "open"
        assert draw["seed"] is None
        assert len(draw["commitment"]) == 64
        assert draw["entries"] == []


async def test_entries_one_per_buyer_one_per_card_windows_and_withdrawal(
    orders_env: OrdersEnv,
) -> None:
    async with orders_env.client() as client:
        product = await draw_drop(orders_env, client, [3, 3])
        pid, item, other_item = product["id"], product["items"][0], product["items"][1]
        alice, bob, carol = (orders_env.buyer() for _ in range(3))
        alice_key = await billing_key(client, alice)

        first = await enter(client, pid, alice, item["id"], alice_key)
        assert first.status_code == 201, first.text
        entry = first.json()
        assert entry["state"] == "entered"
        assert entry["order_id"] is None
        assert "*" in entry["card_number"]  # masked, never the number
        again = await enter(client, pid, alice, item["id"], alice_key)
        assert again.status_code == 200
        assert again.json()["id"] == entry["id"]
        other_size = await enter(client, pid, alice, other_item["id"], alice_key)
        assert other_size.status_code == 409
        assert other_size.json()["code"] == "already_entered"

        # The same card from another account: refused, though the billing key is bob's own.
        bob_same_card = await billing_key(client, bob, APPROVE)
        r = await enter(client, pid, bob, item["id"], bob_same_card)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "card_already_entered"
        # Someone else's billing key, or one the PG never issued: not a card of bob's.
        for foreign in (alice_key, "bk_" + secrets.token_hex(16)):
            r = await enter(client, pid, bob, item["id"], foreign)
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "billing_key_invalid"
        # A size of another product.
        fcfs, fcfs_items = await orders_env.drop(client, [1])
        r = await enter(client, pid, bob, fcfs_items[0]["id"], bob_same_card)
        assert r.status_code == 404
        r = await enter(client, fcfs["id"], bob, fcfs_items[0]["id"], bob_same_card)
        assert r.status_code == 409
        assert r.json()["code"] == "not_a_draw"

        # Withdrawn, the card is free again for another account's entry.
        r = await client.delete(f"/api/products/{pid}/entries/me", headers=alice.auth)
        assert r.status_code == 204
        assert (await my_entry(client, pid, alice))["state"] == "withdrawn"
        r = await enter(client, pid, bob, item["id"], bob_same_card)
        assert r.status_code == 201, r.text
        r = await client.get(f"/api/products/{pid}/entries/me", headers=carol.auth)
        assert r.status_code == 404

        # A draw product is never bought through POST /api/orders.
        r = await orders_env.order(client, carol, [(item["id"], 1)])
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "not_on_sale"

        # Not open yet, and closed.
        later = await draw_drop(
            orders_env, client, [1], opens_in=timedelta(hours=1), closes_in=timedelta(hours=2)
        )
        r = await enter(client, later["id"], carol, later["items"][0]["id"], alice_key)
        assert r.status_code == 409
        assert r.json()["code"] == "entries_not_open"
        closed = await draw_drop(
            orders_env,
            client,
            [1],
            opens_in=timedelta(hours=-2),
            closes_in=timedelta(seconds=-1),
            draw_in=timedelta(hours=1),
        )
        carol_key = await billing_key(client, carol, "4330123412349990")
        r = await enter(client, closed["id"], carol, closed["items"][0]["id"], carol_key)
        assert r.status_code == 409
        assert r.json()["code"] == "entries_closed"


async def _entries_db(env: OrdersEnv, pid: str) -> list[dict[str, Any]]:
    async with env.products_db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, buyer_id, item_id, state, order_id FROM draw_entries"
                " WHERE product_id = :p"
            ),
            {"p": pid},
        )
        return [dict(r._mapping) for r in rows]


async def test_a_draw_charges_in_rank_order_passes_declines_on_and_settles_every_entry(
    orders_env: OrdersEnv,
) -> None:
    """Size A: 2 pairs, 8 entrants, three of whose cards decline; size B: 1 pair, its only
    entrant's card approves but the PG's answer is lost (the reconciler must find it); size C:
    1 pair, 2 entrants. Every pair ends with exactly one winner charged once, every decline
    passed on, the rest lost, and the published draw recomputes to exactly these winners."""
    async with orders_env.client() as client:
        product = await draw_drop(orders_env, client, [2, 1, 1], closes_in=timedelta(seconds=8))
        pid = product["id"]
        a, b, c = (i["id"] for i in product["items"])
        entrants: dict[str, tuple[Buyer, str]] = {}  # buyer id -> (buyer, card's last 4)
        plan = [(a, "0002")] * 3 + [(a, "0000")] * 5 + [(b, "0009")] + [(c, "0000")] * 2
        for n, (item, last) in enumerate(plan):
            buyer = orders_env.buyer()
            key = await billing_key(client, buyer, f"43301234{n:04d}{last}")
            r = await enter(client, pid, buyer, item, key)
            assert r.status_code == 201, r.text
            entrants[buyer.id] = (buyer, last)
        before = await published(client, pid)
        assert before["seed"] is None
        assert len(before["entries"]) == len(plan)

        settled = await eventually(
            lambda: published(client, pid), lambda d: d["state"] == "settled", timeout=120
        )
        seed = settled["seed"]
        assert commitment_of(seed) == before["commitment"] == settled["commitment"]
        verdict = verify(
            commitment=settled["commitment"],
            seed=seed,
            entries=settled["entries"],
            pairs={i["item_id"]: i["pairs"] for i in settled["items"]},
        )
        assert verdict.ok, verdict.problems
        assert verdict.winners == 4
        # The command anyone can run says the same, from the public endpoint alone; and a
        # published draw with one winner moved is refused.
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "snapshoe.cli",
            "draws",
            "verify",
            pid,
            "--gateway",
            orders_env.platform.gateway,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0, out
        assert b"OK: the seed matches" in out
        moved = {**settled, "entries": [dict(e) for e in settled["entries"]]}
        lost = next(e for e in moved["entries"] if e["state"] == "lost")
        lost["state"] = "won"
        assert not draw_verify.check(moved).ok

        rows = await _entries_db(orders_env, pid)
        ranking = rank(seed, [(r["id"], r["item_id"]) for r in rows])
        state = {r["id"]: r["state"] for r in rows}
        card_of = {r["id"]: entrants[r["buyer_id"]][1] for r in rows}
        for item, pairs in ((a, 2), (b, 1), (c, 1)):
            states = [state[e] for e in ranking[item]]
            assert states.count("won") == pairs, states
            # Charged in rank order: every decline and win comes before any loss.
            decided = [s for s in states if s != "lost"]
            assert states[: len(decided)] == decided, states
        for eid, s in state.items():
            # Exactly the declining cards failed, and only those that were reached.
            assert (s == "payment_failed") == (card_of[eid] == "0002" and s != "lost"), (s, eid)
        b_entry = ranking[b][0]
        assert state[b_entry] == "won"  # the lost answer was found approved

        for r in rows:
            buyer, _ = entrants[r["buyer_id"]]
            mine = await my_entry(client, pid, buyer)
            assert mine["state"] == r["state"]
            if r["state"] == "won":
                assert mine["order_id"] == r["order_id"]
                order = await client.get(f"/api/orders/{mine['order_id']}", headers=buyer.auth)
                assert order.status_code == 200
                assert order.json()["status"] == "PREPARING"
            else:
                assert mine["order_id"] is None

        # The ledger: every pair sold; at the PG one approved charge per winner's order and
        # none for any other entrant.
        for item, pairs in ((a, 2), (b, 1), (c, 1)):
            ledger = await orders_env.ledger(item)
            assert ledger == {"initial": pairs, "sold": pairs, "reserved": 0, "available": 0}
        async with httpx.AsyncClient(base_url=orders_env.platform.url("sandbox_pg")) as pg:
            for r in rows:
                if r["order_id"] is None:
                    assert r["state"] == "lost"
                    continue
                found = await pg.get(
                    f"/v1/sandbox/orders/{r['order_id']}/charges",
                    auth=(orders_env.settings.pg_secret_key, ""),
                )
                assert found.status_code == 200, found.text
                charged = found.json()
                assert charged["charges"] == (1 if r["state"] == "won" else 0), (r, charged)
                assert charged["refunds"] == 0


async def test_real_entrants_are_told_by_mail_and_operators_see_the_figures(
    orders_env: OrdersEnv,
) -> None:
    """Through the products outbox, the broker and the users service: a winner's mail names the
    order, a loser's says nothing was charged; the admin figures count what happened."""
    platform = orders_env.platform
    async with orders_env.client() as client:
        product = await draw_drop(orders_env, client, [1, 0], closes_in=timedelta(seconds=6))
        pid = product["id"]
        winner, loser = await platform.verified_user(client), await platform.verified_user(client)
        for user, item, n in ((winner, product["items"][0], 1), (loser, product["items"][1], 2)):
            buyer = Buyer(user.id, user.auth)
            key = await billing_key(client, buyer, f"43307777{n:04d}0000")
            r = await enter(client, pid, buyer, item["id"], key)
            assert r.status_code == 201, r.text
        admin = admin_headers(orders_env.settings)
        r = await client.get(f"/api/admin/products/{pid}/draw", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["entered"] == 2
        assert r.json()["state"] == "open"
        buyer_view = await client.get(f"/api/admin/products/{pid}/draw", headers=winner.auth)
        assert buyer_view.status_code == 403

        await eventually(
            lambda: published(client, pid), lambda d: d["state"] == "settled", timeout=90
        )
        figures = (await client.get(f"/api/admin/products/{pid}/draw", headers=admin)).json()
        assert (figures["won"], figures["lost"], figures["payment_failed"]) == (1, 1, 0)
        assert figures["unsold_pairs"] == 0
        assert [(i["pairs"], i["won"], i["lost"]) for i in figures["items"]] == [
            (1, 1, 0),
            (0, 0, 1),
        ]

        won_entry = await my_entry(client, pid, Buyer(winner.id, winner.auth))
        mails = await eventually(
            lambda: platform.messages(winner.email),
            lambda m: any("드로우 당첨" in x["subject"] for x in m),
            timeout=60,
        )
        won_mail = next(x for x in mails if "드로우 당첨" in x["subject"])
        assert won_entry["order_id"] in won_mail["body"]
        seed = (await published(client, pid))["seed"]
        assert seed in won_mail["body"]
        lost_mails = await eventually(
            lambda: platform.messages(loser.email),
            lambda m: any("드로우 미당첨" in x["subject"] for x in m),
            timeout=60,
        )
        assert sum("드로우" in x["subject"] for x in lost_mails) == 1  # told once
