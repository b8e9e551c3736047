"""The waiting room's outflow never admits more buyers than there are pairs, whatever commits
between the statements of its step. The step reads the ledger's pairs and the outstanding
admissions under READ COMMITTED, so an order that uses its admission and reaches the ledger
between two of those reads must not make a pair look free twice (it did: a fourth admission
for three pairs, seen once in the waiting-room test). docs/waiting-room.md.
"""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from tests.integration.products.conftest import ProductsEnv

from snapshoe.kernel.clock import epoch_ms, to_db
from snapshoe.products import admission_tokens
from snapshoe.products.bootstrap import open_deps
from snapshoe.products.deps import Deps
from snapshoe.products.queue_outflow import step

PAIRS = 3
WAITING = 5


async def running_queue(env: ProductsEnv, client: httpx.AsyncClient) -> dict[str, str]:
    """A released queue of PAIRS pairs: PAIRS buyers admitted, WAITING more waiting."""
    now = datetime.now(UTC)
    product = await env.product(
        client,
        name=f"Outflow race {secrets.token_hex(3)}",
        sale_mode="queue",
        queue_opens_at=(now - timedelta(minutes=2)).isoformat(),
        release_at=(now - timedelta(minutes=1)).isoformat(),
        admission_seconds=600,
    )
    pid = product["id"]
    item = (await env.item(client, pid, PAIRS))["id"]
    tickets: list[dict[str, Any]] = [
        {"id": secrets.token_hex(16), "buyer": f"race-{secrets.token_hex(6)}", "place": n}
        for n in range(1, PAIRS + WAITING + 1)
    ]
    until = now + timedelta(minutes=10)
    async with env.db.begin() as conn:  # one transaction: the platform's outflow sees it whole
        for t in tickets:
            admitted = t["place"] <= PAIRS
            await conn.execute(
                text(
                    "INSERT INTO queue_tickets (id, product_id, buyer_id, lottery, place, state,"
                    " joined_at, admitted_at, admitted_until)"
                    " VALUES (:id, :pid, :buyer, 1, :place, :state, :now, :at, :until)"
                ),
                {
                    **t,
                    "pid": pid,
                    "state": "admitted" if admitted else "waiting",
                    "now": to_db(now),
                    "at": to_db(now) if admitted else None,
                    "until": to_db(until) if admitted else None,
                },
            )
        await conn.execute(
            text(
                "UPDATE queues SET state = 'running', head = :head, next_place = :next,"
                " released_at = :now WHERE product_id = :pid"
            ),
            {"head": PAIRS, "next": PAIRS + WAITING + 1, "now": to_db(now), "pid": pid},
        )
    first = tickets[0]
    token = admission_tokens.sign(
        admission_tokens.signing_key(env.settings.internal_token),
        first["id"],
        first["buyer"],
        pid,
        epoch_ms(until),
    )
    return {"pid": pid, "item": item, "buyer": first["buyer"], "token": token}


async def counts(env: ProductsEnv, pid: str) -> dict[str, int]:
    async with env.db.connect() as conn:
        rows = await conn.execute(
            text("SELECT state, COUNT(*) FROM queue_tickets WHERE product_id = :p GROUP BY state"),
            {"p": pid},
        )
        return {str(s): int(n) for s, n in rows.all()}


# Only the step's own statements are counted: the session's event loop may run other tests'
# leftover tasks, whose sessions must neither be counted nor paused.
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("in_step", default=False)


async def step_with(deps: Deps, pid: str, after: int, inject: Callable[[], Awaitable[None]]) -> int:
    """Run one outflow step, running ``inject`` to its end right after the step's statement
    number ``after`` (1-based); returns how many statements the step ran."""
    executed = 0
    original = AsyncSession.execute

    async def execute(self: AsyncSession, *args: Any, **kw: Any) -> Any:
        nonlocal executed
        result = await original(self, *args, **kw)
        if _IN_STEP.get():
            executed += 1
            if executed == after:
                await inject()
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AsyncSession, "execute", execute)
        token = _IN_STEP.set(True)
        try:
            await step(deps, pid, 600, datetime.now(UTC))
        finally:
            _IN_STEP.reset(token)
    return executed


async def test_an_order_landing_between_any_two_reads_of_a_step_admits_nobody_extra(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env

    async def nothing() -> None:
        return None

    async with open_deps(env.settings) as deps:
        await check_every_statement(env, client, deps, nothing)


async def check_every_statement(
    env: ProductsEnv,
    client: httpx.AsyncClient,
    deps: Deps,
    nothing: Callable[[], Awaitable[None]],
) -> None:
    probe = await running_queue(env, client)
    statements = await step_with(deps, probe["pid"], 0, nothing)
    assert statements >= 3
    assert await counts(env, probe["pid"]) == {"admitted": PAIRS, "waiting": WAITING}
    for after in range(1, statements + 1):
        q = await running_queue(env, client)

        async def order(q: dict[str, str] = q) -> None:
            # The first admitted buyer orders: the admission is used and the pair reaches the
            # ledger, both committed, while the step's transaction is between two statements.
            r = await client.post(
                "/internal/reservations",
                json={
                    "reservation_id": secrets.token_hex(16),
                    "buyer_id": q["buyer"],
                    "lines": [{"item_id": q["item"], "quantity": 1}],
                    "reserved_until": (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
                    "admission_token": q["token"],
                },
                headers=env.internal,
            )
            assert r.status_code == 201, r.text

        await step_with(deps, q["pid"], after, order)
        assert (await env.ledger(q["item"]))["available"] == PAIRS - 1
        got = await counts(env, q["pid"])
        # Two buyers still hold an admission for the two pairs left; nobody else is in.
        assert got == {"admitted": PAIRS - 1, "used": 1, "waiting": WAITING}, (after, got)
