"""After the stampede (not the measured phase): the winners pay through the sandbox PG (a share
declines), declined pairs come back on sale and buyers who have not bought yet try again, round
by round, until the drop is sold out, the buyers are exhausted or a cap stops it; then the wait
until every order has settled its stock at products."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from snapshoe.bench import checks
from snapshoe.bench.drop_model import (
    APPROVE_CARD,
    DECLINE_CARD,
    MAX_ROUNDS,
    Drop,
    window_problem,
)
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.http import Client, Response


def drop_pairs(drop: Drop) -> int:
    return sum(int(i.get("initial", i.get("stock", 0))) for i in drop.items)


@dataclass
class Rounds:
    """The tally of the payment and re-buy rounds."""

    started: float
    cap_at: float
    paid: Counter[int] = field(default_factory=Counter)
    rebuy: Counter[str] = field(default_factory=Counter)
    approved: int = 0
    rounds: int = 0
    note: str = ""
    stopped: str | None = None

    def as_dict(self, buyers_left: int) -> dict[str, Any]:
        return {
            "rounds_after_stampede": self.rounds,
            "payments": {str(k): v for k, v in sorted(self.paid.items())},
            "approved": self.approved,
            "rebuy_responses": dict(self.rebuy),
            "buyers_left": buyers_left,
            "seconds": round(time.monotonic() - self.started, 2),
            "note": self.note,
            "stopped": self.stopped,
        }


async def pay(bench: Bench, client: Client, order_id: str, buyer: str, decline: bool) -> int:
    r = await client.post(
        "/pg/v1/sandbox/authorizations",
        json={
            "order_id": order_id,
            "amount": bench.cfg.price,
            "card_number": DECLINE_CARD if decline else APPROVE_CARD,
        },
    )
    if r.status != 200:
        return r.status
    r = await client.post(
        "/api/payments/confirm",
        json={
            "order_id": order_id,
            "payment_key": r.json()["payment_key"],
            "amount": bench.cfg.price,
        },
        headers={
            "Authorization": f"Bearer {bench.tokens[buyer]}",
            "Idempotency-Key": f"bp-{bench.run_id}-{order_id}",
        },
    )
    return r.status


async def stock_left(client: Client, drop: Drop) -> dict[str, int]:
    r = await client.get(f"/api/products/{drop.product_id}")
    r.raise_for_status()
    return {i["id"]: int(i["stock_remaining"]) for i in r.json()["items"]}


async def pay_round(
    bench: Bench,
    client: Client,
    sem: asyncio.Semaphore,
    winners: list[tuple[str, str]],
    tally: Rounds,
) -> None:
    """Every winner pays at once; ``decline_share`` of them with a declining card."""

    async def one_payment(order_id: str, buyer: str, decline: bool) -> int:
        async with sem:
            return await pay(bench, client, order_id, buyer, decline)

    n_decline = round(len(winners) * bench.cfg.decline_share)
    decline = set(bench.rng.sample(range(len(winners)), n_decline))
    codes = await asyncio.gather(
        *(one_payment(o, b, n in decline) for n, (o, b) in enumerate(winners))
    )
    tally.paid.update(codes)
    tally.approved += sum(1 for c in codes if c == 200)


async def why_stop(bench: Bench, drop: Drop, tally: Rounds) -> str | None:
    """Why no further round may run: the payment window or the time cap."""
    # Winners pay at once, so an expired order means the window is shorter than
    # the drop: more rounds would only re-sell pairs that expire again.
    window = await checks.payment_window(bench.settings, drop.product_id)
    if window is not None and window.expired:
        return window_problem(window, 0.0)
    if time.monotonic() > tally.cap_at:
        return (
            f"stopped: the payments and re-buys passed their time cap "
            f"({bench.cfg.pay_max_seconds:g} s, --pay-max-seconds) after {tally.rounds} rounds"
        )
    return None


async def wait_pairs_back(
    client: Client, drop: Drop, want_left: int, tally: Rounds
) -> dict[str, int]:
    """The stock left per item once ``want_left`` pairs are back on sale (or 60 s passed)."""
    deadline = min(time.monotonic() + 60, tally.cap_at)
    left = await stock_left(client, drop)
    while sum(left.values()) < want_left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        left = await stock_left(client, drop)
    if sum(left.values()) < want_left:
        tally.note = f"only {sum(left.values())} of {want_left} pairs came back within 60 s"
    return left


async def rebuy_round(
    bench: Bench,
    client: Client,
    sem: asyncio.Semaphore,
    buyers: list[str],
    on_sale: list[str],
    tally: Rounds,
    client_ids: set[str],
) -> list[tuple[str, str]]:
    """Each of ``buyers`` orders one pair of an item on sale; returns the new winners."""

    async def one_order(buyer: str, item_id: str) -> tuple[str, Response]:
        async with sem:
            r = await client.post(
                "/api/orders",
                json={"lines": [{"item_id": item_id, "quantity": 1}]},
                headers={
                    "Authorization": f"Bearer {bench.tokens[buyer]}",
                    "Idempotency-Key": f"br-{bench.run_id}-{buyer}-{tally.rounds}",
                },
            )
            return buyer, r

    answers = await asyncio.gather(*(one_order(b, bench.rng.choice(on_sale)) for b in buyers))
    winners = []
    for buyer, r in answers:
        code = r.json().get("code", "") if r.status >= 400 else ""
        tally.rebuy[f"{r.status}:{code}" if code else str(r.status)] += 1
        if r.status == 201:
            oid = r.json()["id"]
            client_ids.add(oid)
            winners.append((oid, buyer))
    return winners


async def pay_and_rebuy(
    bench: Bench,
    client: Client,
    drop: Drop,
    winners: list[tuple[str, str]],
    pool: list[str],
    client_ids: set[str],
) -> dict[str, Any]:
    sem = asyncio.Semaphore(bench.cfg.pay_concurrency)
    started = time.monotonic()
    tally = Rounds(started=started, cap_at=started + bench.cfg.pay_max_seconds)
    while True:
        bench.ensure_fresh_tokens(120)
        await pay_round(bench, client, sem, winners, tally)
        winners = []
        # Pairs not sold yet: declined ones (back once orders has released them at
        # products) and any no winner of the last round took.
        want_left = drop_pairs(drop) - tally.approved
        if want_left <= 0 or not pool or tally.rounds >= MAX_ROUNDS:
            break
        tally.stopped = await why_stop(bench, drop, tally)
        if tally.stopped is not None:
            break
        left = await wait_pairs_back(client, drop, want_left, tally)
        on_sale = [i for i, n in left.items() if n > 0]
        if not on_sale:
            break
        tally.rounds += 1
        take = min(len(pool), max(1, 2 * sum(left.values())))
        buyers, pool[:] = pool[:take], pool[take:]
        winners = await rebuy_round(bench, client, sem, buyers, on_sale, tally, client_ids)
    return tally.as_dict(len(pool))


async def wait_settled(bench: Bench, drop: Drop, within: float) -> bool:
    """Every paid or declined order has settled its stock at products."""
    deadline = time.monotonic() + within
    while True:
        orders = await checks.product_orders(bench.settings, drop.product_id)
        items = await checks.ledger(bench.settings, drop.product_id)
        pending = sum(1 for _, s, _ in orders.ids.values() if s == "PENDING_PAYMENT")
        reserved = sum(int(i["reserved"]) for i in items)
        paid = sum(1 for _, s, _ in orders.ids.values() if s == "PREPARING")
        sold = sum(int(i["sold"]) for i in items)
        if pending == 0 and reserved == 0 and paid == sold:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
