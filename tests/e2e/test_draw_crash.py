"""A draw's worker SIGKILLed in the middle of its charges, on a second platform whose own
products worker leaves draws alone (a draw step of an hour): the draw runs in a worker process
of the test's, which is killed while charges are in flight at a slow PG; a second worker
resumes. Nobody is charged twice, no pair is sold twice, every pair goes to an entrant, and
the published draw still verifies (docs/draws.md, "Exactly once")."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.integration.orders.helpers import OrdersEnv
from tests.integration.orders.test_draws import billing_key, draw_drop, enter, published
from tests.support.platform import (
    ROOT,
    SLOT,
    TEST_ENV,
    Platform,
    make_test_settings,
    reset_state,
    second_platform_env,
    start_platform,
    stop_platform_process,
)
from tests.support.waiting import eventually

from snapshoe.kernel.draw_ranking import verify

PAIRS, ENTRANTS = 6, 14


def _overrides() -> dict[str, str]:
    # Below the ephemeral range, apart from the other platforms. The platform's own products
    # worker takes one pass at start, then leaves draws alone.
    return second_platform_env(28000 + SLOT * 200, "drawtest") | {
        "SNAPSHOE_DRAW_STEP_SECONDS": "3600",
    }


@pytest.fixture(scope="module")
def idle_draws_platform() -> Iterator[Platform]:
    overrides = _overrides()
    reset_state(make_test_settings(**{k[9:].lower(): v for k, v in overrides.items()}))
    running = start_platform(overrides)
    try:
        yield running
    finally:
        code = stop_platform_process(running.proc)
        assert code == 0, running.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
async def env(idle_draws_platform: Platform) -> Any:
    e = OrdersEnv(idle_draws_platform)
    try:
        yield e
    finally:
        await e.aclose()


def _worker() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **TEST_ENV,
        **_overrides(),
        "SNAPSHOE_DRAW_STEP_SECONDS": "0.2",
        "SNAPSHOE_DRAW_CHARGE_CONCURRENCY": "2",
        "SNAPSHOE_DRAW_RESEND_SECONDS": "3",
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "snapshoe.cli", "worker", "products"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def _in_flight(env: OrdersEnv, pid: str) -> tuple[int, int]:
    """Charging entries whose order holds its pair (the charge under way), and won ones."""
    async with env.products_db.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT SUM(e.state = 'charging' AND r.state = 'ACTIVE'),"
                    " SUM(e.state = 'won') FROM draw_entries e"
                    " LEFT JOIN reservations r ON r.id = e.order_id WHERE e.product_id = :p"
                ),
                {"p": pid},
            )
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def test_a_worker_killed_mid_charge_is_resumed_and_nobody_is_charged_twice(
    env: OrdersEnv,
) -> None:
    platform = env.platform
    secret = (env.settings.pg_secret_key, "")
    async with env.client() as client, httpx.AsyncClient(base_url=platform.url("sandbox_pg")) as pg:
        product = await draw_drop(env, client, [PAIRS], closes_in=timedelta(seconds=20))
        pid, item = product["id"], product["items"][0]["id"]
        buyers = []
        for n in range(ENTRANTS):
            buyer = env.buyer()
            key = await billing_key(client, buyer, f"43305555{n:04d}0000")
            r = await enter(client, pid, buyer, item, key)
            assert r.status_code == 201, r.text
            buyers.append(buyer)
        # Every charge takes 1.5 s at the PG, two at a time: the kill lands mid-charge.
        r = await pg.put("/v1/sandbox/config", json={"latency_ms": 1500}, auth=secret)
        assert r.status_code == 200, r.text
        try:
            first = _worker()
            try:
                flying = await eventually(
                    lambda: _in_flight(env, pid), lambda f: f[0] > 0 and f[1] >= 1, timeout=60
                )
                os.killpg(first.pid, signal.SIGKILL)
                assert first.wait(10) == -signal.SIGKILL
            finally:
                if first.poll() is None:
                    os.killpg(first.pid, signal.SIGKILL)
            in_flight, won = await _in_flight(env, pid)
            assert won < PAIRS, (flying, in_flight, won)  # killed before it finished

            second = _worker()
            try:
                settled = await eventually(
                    lambda: published(client, pid), lambda d: d["state"] == "settled", timeout=120
                )
            finally:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(30)
        finally:
            await pg.delete("/v1/sandbox/config", auth=secret)

        verdict = verify(
            commitment=settled["commitment"],
            seed=settled["seed"],
            entries=settled["entries"],
            pairs={i["item_id"]: i["pairs"] for i in settled["items"]},
        )
        assert verdict.ok, verdict.problems
        assert verdict.winners == PAIRS
        assert await env.ledger(item) == {
            "initial": PAIRS,
            "sold": PAIRS,
            "reserved": 0,
            "available": 0,
        }
        async with env.products_db.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT state, order_id FROM draw_entries WHERE product_id = :p"),
                    {"p": pid},
                )
            ).all()
        assert sorted(s for s, _ in rows).count("won") == PAIRS
        assert {s for s, _ in rows} <= {"won", "lost"}
        for state, order_id in rows:
            if order_id is None:
                continue
            charged = (await pg.get(f"/v1/sandbox/orders/{order_id}/charges", auth=secret)).json()
            # Exactly one charge per winner; a resent charge was never a second one.
            assert charged["charges"] == (1 if state == "won" else 0), (state, charged)
        async with env.orders_db.connect() as conn:
            paid = (
                await conn.execute(
                    text(
                        "SELECT COUNT(*), COUNT(DISTINCT buyer_id) FROM orders o JOIN order_lines l"
                        " ON l.order_id = o.id WHERE l.item_id = :i AND o.status = 'PREPARING'"
                    ),
                    {"i": item},
                )
            ).one()
        assert tuple(paid) == (PAIRS, PAIRS)
        await asyncio.sleep(0)
