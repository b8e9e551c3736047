"""`snapshoe bench drop` on a platform whose payment window is shorter than the drop stops at
once and says why (issue 12, item 20), instead of re-selling expiring pairs for minutes.

Its own small platform (module scope, other ports and namespace): the session's keeps the
default 600 s window, and this one's orders expire after 1 s, less than any drop here lasts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.platform import (
    SLOT,
    Platform,
    make_test_settings,
    reset_state,
    second_platform_env,
    start_platform,
    stop_platform_process,
)

from snapshoe.bench.checks import PaymentWindow
from snapshoe.bench.drop import DropConfig, run_drop, summary_lines, window_problem


def _short_window_env() -> dict[str, str]:
    # Below the ephemeral range, apart from the other platforms.
    return second_platform_env(26000 + SLOT * 200, "ttltest") | {
        "SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def short_window_platform() -> Iterator[Platform]:
    env = _short_window_env()
    reset_state(
        make_test_settings(**{k.removeprefix("SNAPSHOE_").lower(): v for k, v in env.items()})
    )
    running = start_platform(env)
    try:
        yield running
    finally:
        assert stop_platform_process(running.proc) == 0, running.log_path


def test_window_problem_only_when_orders_expire_before_they_can_be_paid() -> None:
    assert window_problem(None, 3.0) is None
    assert window_problem(PaymentWindow(600, 590, 0), 10.0) is None
    soon = window_problem(PaymentWindow(10, 0.5, 0), 9.5)
    assert soon is not None
    assert "payment window (10 s, SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS" in soon
    gone = window_problem(PaymentWindow(10, -30, 4), 40.0)
    assert gone is not None
    assert "4 orders already expired" in gone


async def test_a_drop_longer_than_the_payment_window_stops_and_says_why(
    short_window_platform: Platform, tmp_path: Path
) -> None:
    cfg = DropConfig(
        buyers=120,
        pairs=20,
        sizes=4,
        connections=16,
        threads=1,
        decline_share=0.2,
        lead_seconds=2,
        max_seconds=30,
        pay_max_seconds=60,
        seed=3,
        out=tmp_path / "drop.json",
        html=False,
    )
    started = time.monotonic()
    result = await run_drop(short_window_platform.settings, cfg)
    took = time.monotonic() - started
    lines = summary_lines(result)
    print("\n".join(lines))

    assert result["ok"] is False
    reason = result["stopped"]
    assert reason is not None
    assert "payment window (1 s, SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS" in reason
    assert reason in result["failures"]
    assert any(reason in line for line in lines)
    assert result["payment_window_seconds"] == pytest.approx(1, abs=0.01)
    # Stopped before paying anyone: no re-buy rounds of expiring pairs.
    assert result["payment"]["approved"] == 0
    assert result["payment"]["rebuy_responses"] == {}
    saved = json.loads((tmp_path / "drop.json").read_text())
    assert saved["stopped"] == reason
    assert saved["ok"] is False
    # Nothing sold twice, the expired pairs back on sale, all within minutes, not hours.
    assert result["oversold"] == 0
    assert result["ledger_consistent"] is True
    assert took < 240
