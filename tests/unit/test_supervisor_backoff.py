"""The restart schedule of `snapshoe up`'s supervisor (snapshoe.supervisor.Backoff), pure."""

from __future__ import annotations

import signal

import pytest

from snapshoe.supervisor import Backoff, describe_exit


def test_the_default_schedule_doubles_from_half_a_second_to_a_30_s_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_long_crash_loop_stays_at_the_cap() -> None:
    assert Backoff().delay(10_000) == 30


def test_a_smaller_schedule_for_tests() -> None:
    backoff = Backoff(initial=0.2, cap=0.8)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 0.8, 0.8]


def test_crashes_in_a_row_count_up_while_the_child_dies_soon() -> None:
    backoff = Backoff()
    crashes = 0
    for uptime in (0.1, 3.0, 59.9):
        crashes = backoff.crashes_in_a_row(crashes, uptime)
    assert crashes == 3
    assert backoff.delay(crashes) == 2


@pytest.mark.parametrize("uptime", [60.0, 61.0, 3600.0])
def test_a_child_that_stayed_up_60_s_starts_over_at_the_first_delay(uptime: float) -> None:
    backoff = Backoff()
    assert backoff.crashes_in_a_row(6, uptime) == 1
    assert backoff.delay(backoff.crashes_in_a_row(6, uptime)) == 0.5


def test_the_reset_is_configurable() -> None:
    backoff = Backoff(reset_after=1.0)
    assert backoff.crashes_in_a_row(4, 0.99) == 5
    assert backoff.crashes_in_a_row(4, 1.0) == 1


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL (signal 9)"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV (signal 11)"
