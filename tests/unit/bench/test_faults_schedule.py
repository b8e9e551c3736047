"""The fault schedule of ``snapshoe bench drop --faults`` (bench.faults_schedule): the text is
parsed into faults in time order, every wrong schedule is refused saying why, the built-in ones
parse, and the figures of a run (recovery per fault, what buyers saw in its window) are
computed from the probes and answers alone."""

from __future__ import annotations

import pytest

from snapshoe.bench.faults_schedule import (
    BUILTIN,
    Fault,
    Sample,
    ScheduleError,
    answers_between,
    errors_of,
    is_anomalous,
    parse,
    recovery,
    span,
    text_of,
    windows,
)


def test_the_issue_example_parses_in_time_order() -> None:
    faults = parse("1:kill:orders,3:pause:products:2,5:redis-empty,8:broker-restart:3,12:db-stop:3")
    assert faults == [
        Fault(1, "kill", "orders"),
        Fault(3, "pause", "products", 2),
        Fault(5, "redis-empty"),
        Fault(8, "broker-restart", None, 3),
        Fault(12, "db-stop", None, 3),
    ]
    assert span(faults) == 15
    assert faults[1].end == 5


def test_unordered_text_is_sorted_and_round_trips() -> None:
    faults = parse(" 4:redis-stale:1 , 0.5:kill:payments-worker,2:redis-snapshot ")
    assert [f.at for f in faults] == [0.5, 2, 4]
    assert faults[2].seconds == 1
    assert parse(text_of(faults)) == faults


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_schedules_parse(name: str) -> None:
    faults = parse(name)
    assert faults
    assert parse(text_of(faults)) == faults


def test_default_schedule_covers_the_issue_list() -> None:
    faults = parse("default")
    killed = {f.target for f in faults if f.action == "kill"}
    for kind in ("orders", "products", "payments", "users"):
        assert kind in killed
        assert f"{kind}-worker" in killed
    actions = {f.action for f in faults}
    assert {"redis-empty", "redis-stale", "redis-snapshot", "broker-restart", "db-stop"} <= actions
    assert "pause" in actions
    # The stale restart has an older snapshot to go back to.
    snap = next(f.at for f in faults if f.action == "redis-snapshot")
    assert snap < next(f.at for f in faults if f.action == "redis-stale")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty schedule"),
        ("   ,  ", "empty schedule"),
        ("kill:orders", "not a time"),
        ("1", "expected AT:ACTION"),
        ("-1:kill:orders", "seconds after the release"),
        ("1:explode", "unknown action"),
        ("1:kill", "needs a process"),
        ("1:kill:gateway", "gateway is not a target"),
        ("1:pause:gateway-2:1", "gateway is not a target"),
        ("1:kill:Orders;rm", "not a process name"),
        ("1:pause:orders", "needs its seconds"),
        ("1:pause:orders:0", "more than 0 seconds"),
        ("1:db-stop", "needs its seconds"),
        ("1:db-stop:x", "not a number"),
        ("1:broker-restart:999", "within 0..120"),
        ("1:redis-empty:1:2", "at most its seconds"),
        ("1:redis-snapshot:3", "takes no argument"),
        ("1:kill:orders:3", "takes no argument"),
        ("1:db-stop:5,3:db-stop:1", "still holds the database"),
        ("1:pause:orders:3,2:kill:orders", "still holds process orders"),
        ("1:redis-empty:3,2:redis-stale", "still holds redis"),
    ],
)
def test_wrong_schedules_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        parse(text)


def test_faults_of_different_things_may_overlap() -> None:
    faults = parse("1:db-stop:5,2:pause:orders:2,3:kill:products,4:redis-empty")
    assert len(faults) == 4


# Recovery


def samples(*pairs: tuple[float, bool]) -> list[Sample]:
    return [Sample(t, ok) for t, ok in pairs]


def test_recovery_is_the_first_good_round_after_the_last_bad_one() -> None:
    s = samples((0.9, True), (1.1, False), (1.3, True), (1.5, False), (1.7, False), (1.9, True))
    assert recovery(s, 1.0, 5.0) == (0.9, 3)


def test_no_bad_round_is_no_outage_seen() -> None:
    assert recovery(samples((1.0, True), (1.2, True)), 1.0, 3.0) == (0.0, 0)
    assert recovery([], 1.0, 3.0) == (0.0, 0)


def test_still_bad_at_the_window_end_is_not_recovered() -> None:
    s = samples((1.1, False), (1.3, True), (2.9, False), (3.2, True))
    # The good round at 3.2 is in the next fault's window.
    assert recovery(s, 1.0, 3.0) == (None, 2)


def test_rounds_outside_the_window_are_not_counted() -> None:
    s = samples((0.5, False), (1.2, True), (2.0, False), (2.1, True), (4.0, False))
    assert recovery(s, 1.0, 3.0) == (1.1, 1)


def test_windows_run_until_the_next_fault_or_the_end() -> None:
    faults = parse("1:kill:orders,3:db-stop:4,5:kill:users")
    # The database's window lasts at least as long as its outage.
    assert windows(faults, 20.0) == [(1, 3), (3, 7), (5, 20)]


def test_answers_and_errors_in_a_window() -> None:
    answers = [
        (0.9, "201"),
        (1.0, "201"),
        (1.5, "503+retry-after"),
        (1.6, "502"),
        (1.7, "transport"),
        (1.8, "409:sold_out"),
        (3.0, "500:internal_error"),
    ]
    seen = answers_between(answers, 1.0, 3.0)
    assert seen == {"201": 1, "409:sold_out": 1, "502": 1, "503+retry-after": 1, "transport": 1}
    assert errors_of(seen) == {"502": 1, "503+retry-after": 1, "transport": 1}


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("500", True),
        ("500:internal_error", True),
        ("503+retry-after", False),
        ("503:service_unavailable", False),
        ("502", False),
        ("504:gateway_timeout", False),
        ("transport", False),
        ("409:sold_out", False),
    ],
)
def test_only_a_500_is_an_anomaly(kind: str, bad: bool) -> None:
    assert is_anomalous(kind) is bad
