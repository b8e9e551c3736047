"""The live updates' fan-out: what each message wakes, and when (queue_hub.py, queue_stream.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from snapshoe.products import queue_hub
from snapshoe.products.domain import TicketState
from snapshoe.products.queue_hub import Listener, QueueHub
from snapshoe.products.queue_stream import _told


def crowd(hub: QueueHub, n: int, pid: str = "p1") -> list[Listener]:
    """n open streams on one product, registered as listen() does (without a subscription)."""
    out = []
    for i in range(n):
        listener = Listener(pid, f"T{i}")
        hub.listeners.setdefault(pid, set()).add(listener)
        hub.by_ticket.setdefault(listener.ticket_id, set()).add(listener)
        out.append(listener)
    return out


def woken(listeners: list[Listener]) -> int:
    return sum(listener.woken.is_set() for listener in listeners)


def new_hub() -> QueueHub:
    return QueueHub(redis=None, namespace="test")  # type: ignore[arg-type]


async def test_a_ticket_change_wakes_only_that_ticket_with_a_read() -> None:
    hub = new_hub()
    streams = crowd(hub, 5)
    hub.dispatch({"p": "p1", "head": 3, "t": ["T2"]})
    assert streams[2].woken.is_set()
    assert streams[2].reread
    assert [s.reread for s in streams].count(True) == 1
    assert hub.head("p1") == 3


async def test_a_head_move_wakes_nobody_but_is_kept_for_the_next_heartbeat() -> None:
    hub = new_hub()
    streams = crowd(hub, 20)
    hub.dispatch({"p": "p1", "head": 1})
    hub.dispatch({"p": "p1", "head": 3})
    hub.dispatch({"p": "p1", "head": 2})  # an older message arriving late moves nothing back
    await asyncio.sleep(0.05)
    assert woken(streams) == 0
    assert not any(s.reread for s in streams)
    assert hub.head("p1") == 3


async def test_everyone_gets_a_fresh_row_from_one_read_spread_over_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_hub, "FRAMES_PER_SECOND", 100.0)  # 10 per 0.1 s step
    hub = new_hub()
    streams = crowd(hub, 30)
    reads: list[str] = []

    async def reader(pid: str) -> dict[str, dict[str, Any]]:
        reads.append(pid)
        return {s.ticket_id: {"id": s.ticket_id, "place": n + 1} for n, s in enumerate(streams)}

    hub.reader = reader
    hub.dispatch({"p": "p1", "all": True, "head": 0})
    await asyncio.sleep(0.01)
    assert reads == ["p1"]  # one read for the whole crowd
    assert woken(streams) == 10
    await asyncio.sleep(0.15)
    assert woken(streams) == 20
    await asyncio.sleep(0.1)
    assert woken(streams) == 30
    assert [s.row["place"] for s in streams if s.row] == list(range(1, 31))
    assert not any(s.reread for s in streams)


async def test_with_a_read_for_everyone_the_changed_tickets_are_told_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_hub, "FRAMES_PER_SECOND", 30.0)  # 3 per 0.1 s step
    hub = new_hub()
    streams = crowd(hub, 30)

    async def reader(pid: str) -> dict[str, dict[str, Any]]:
        return {s.ticket_id: {"id": s.ticket_id} for s in streams}

    hub.reader = reader
    hub.dispatch({"p": "p1", "all": True, "t": ["T27", "T28", "T29"]})
    await asyncio.sleep(0.01)
    assert {s.ticket_id for s in streams if s.woken.is_set()} == {"T27", "T28", "T29"}
    assert not any(s.reread for s in streams)  # the read for everyone carries them


async def test_without_the_read_each_stream_reads_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_hub, "FALLBACK_READS_PER_SECOND", 100.0)
    hub = new_hub()
    streams = crowd(hub, 15)

    async def reader(pid: str) -> dict[str, dict[str, Any]]:
        raise OSError("the database is away")

    hub.reader = reader
    hub.dispatch({"p": "p1", "all": True})
    await asyncio.sleep(0.01)
    assert woken(streams) == 10
    await asyncio.sleep(0.15)
    assert woken(streams) == 15
    assert all(s.reread for s in streams)
    assert all(s.row is None for s in streams)


async def test_the_end_tells_every_stream_the_last_admitted_place() -> None:
    hub = new_hub()
    streams = crowd(hub, 3)
    other = crowd(hub, 2, pid="p2")
    hub.dispatch({"p": "p1", "head": 7, "ended": True})
    assert woken(streams) == 3
    assert {s.ended_after for s in streams} == {7}
    assert not any(s.reread for s in streams)
    assert woken(other) == 0
    assert {s.ended_after for s in other} == {None}


def row(state: str, place: int | None) -> dict[str, Any]:
    return {"id": "T1", "state": state, "place": place}


@pytest.mark.parametrize(
    ("state", "place", "fate", "reread"),
    [
        (TicketState.WAITING, 8, TicketState.SOLD_OUT, False),  # past the last admitted: told
        (TicketState.WAITING, 7, TicketState.WAITING, True),  # admitted meanwhile: read it
        (TicketState.ADMITTED, 5, TicketState.ADMITTED, False),  # its own change tells it
    ],
)
def test_a_stream_learns_its_fate_at_the_end_without_a_read_where_it_can(
    state: str, place: int, fate: str, reread: bool
) -> None:
    listener = Listener("p1", "T1", ended_after=7)
    assert _told(listener, row(state, place))["state"] == fate
    assert listener.reread is reread
    assert listener.ended_after is None


def test_a_row_read_for_everyone_never_takes_a_ticket_back() -> None:
    listener = Listener("p1", "T1", row=row(TicketState.WAITING, 3))
    assert _told(listener, row(TicketState.ADMITTED, 3))["state"] == TicketState.ADMITTED
    assert listener.row is None
    listener.row = row(TicketState.WAITING, 3)
    assert _told(listener, row(TicketState.WAITING, None))["place"] == 3


async def test_a_lost_update_heals_with_one_periodic_read_that_wakes_only_the_changed() -> None:
    """No stream reads its own ticket on a timer: each process reads its products' tickets
    every REFRESH_SECONDS for all its streams, and wakes those whose ticket it shows changed."""
    hub = new_hub()
    streams = crowd(hub, 20)
    rows = {s.ticket_id: row(TicketState.WAITING, n + 1) for n, s in enumerate(streams)}
    for s in streams:
        s.known = queue_hub.told_key(rows[s.ticket_id])
    reads: list[str] = []

    async def reader(pid: str) -> dict[str, dict[str, Any]]:
        reads.append(pid)
        return rows

    hub.reader = reader
    hub.refresh(0.0)  # the first sight of the product only sets its turn
    due = hub.refresh_at["p1"]
    assert 0.0 <= due <= queue_hub.REFRESH_SECONDS
    hub.refresh(due - 0.1)
    await asyncio.sleep(0.01)
    assert reads == []
    # Two tickets were admitted and their messages lost.
    rows["T3"] = {**rows["T3"], "state": TicketState.ADMITTED, "admitted_until": 1}
    rows["T9"] = {**rows["T9"], "state": TicketState.ADMITTED, "admitted_until": 1}
    hub.refresh(due)
    await asyncio.sleep(0.01)
    assert reads == ["p1"]  # one read for the crowd
    assert {s.ticket_id for s in streams if s.woken.is_set()} == {"T3", "T9"}
    assert all((s.row is not None) == (s.ticket_id in {"T3", "T9"}) for s in streams)
    assert not any(s.reread for s in streams)
    assert hub.refresh_at["p1"] >= due + 0.75 * queue_hub.REFRESH_SECONDS


async def test_a_failed_periodic_read_sends_no_stream_to_the_database() -> None:
    hub = new_hub()
    streams = crowd(hub, 10)

    async def reader(pid: str) -> dict[str, dict[str, Any]]:
        raise OSError("the database is away")

    hub.reader = reader
    hub.refresh(0.0)
    hub.refresh(hub.refresh_at["p1"])
    await asyncio.sleep(0.01)
    assert woken(streams) == 0
    assert not any(s.reread for s in streams)
