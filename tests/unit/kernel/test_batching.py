"""GroupCommit (kernel.batching): pure asyncio, with a fake writer that records its batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import Counter as PromCounter

from snapshoe.kernel.batching import FAULTS, GroupCommit, OutcomeUnknown, together_or_alone


class Writer:
    """Doubles each item; fails the items it is told to; holds every batch until released."""

    def __init__(self, fail: set[int] | None = None, raise_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail or set()
        self.raise_on = raise_on
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(batch)
        await self.gate.wait()
        if self.raise_on in batch:
            raise OSError("connection lost")
        return [ValueError(i) if i in self.fail else 2 * i for i in batch]


async def test_callers_that_arrive_during_a_write_go_together_in_the_next_batch() -> None:
    writer = Writer()
    gc: GroupCommit[int, int] = GroupCommit("t1", writer, writers=1, max_batch=64)
    gc.start()
    writer.gate.clear()
    first = asyncio.create_task(gc.submit(0))
    await asyncio.sleep(0.01)  # the writer now holds [0]
    rest = [asyncio.create_task(gc.submit(i)) for i in range(1, 201)]
    await asyncio.sleep(0.01)
    writer.gate.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [2 * i for i in range(1, 201)]
    # 200 waiting callers, at most 64 a batch: 4 batches after the first, none of them empty.
    assert [len(b) for b in writer.batches] == [1, 64, 64, 64, 8]
    assert sorted(i for b in writer.batches for i in b) == list(range(201))
    await gc.close()


async def test_a_lone_caller_is_written_at_once() -> None:
    writer = Writer()
    gc: GroupCommit[int, int] = GroupCommit("t2", writer, writers=2, max_batch=64)
    gc.start()
    assert await asyncio.wait_for(gc.submit(21), 1) == 42
    assert writer.batches == [[21]]
    await gc.close()


async def test_each_caller_gets_its_own_exception_and_a_raising_writer_fails_its_batch() -> None:
    writer = Writer(fail={3, 5}, raise_on=100)
    gc: GroupCommit[int, int] = GroupCommit("t3", writer, writers=1, max_batch=8)
    gc.start()
    results = await asyncio.gather(*(gc.submit(i) for i in range(8)), return_exceptions=True)
    for i, r in enumerate(results):
        if i in (3, 5):
            assert isinstance(r, ValueError)
            assert r.args == (i,)
        else:
            assert r == 2 * i
    with pytest.raises(OSError, match="connection lost"):
        await gc.submit(100)
    assert await gc.submit(7) == 14  # the writer task survived the raising batch
    await gc.close()


async def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    writer = Writer()
    gc: GroupCommit[int, int] = GroupCommit("t4", writer, writers=1, max_batch=64)
    gc.start()
    writer.gate.clear()
    waiting = [asyncio.create_task(gc.submit(i)) for i in range(10)]
    await asyncio.sleep(0.01)
    waiting[4].cancel()
    writer.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[4], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 4] == [2 * i for i in range(10) if i != 4]
    assert 4 in [i for b in writer.batches for i in b]  # still written
    await gc.close()


async def test_close_fails_what_is_queued_and_submit_needs_a_start() -> None:
    writer = Writer()
    gc: GroupCommit[int, int] = GroupCommit("t5", writer, writers=1, max_batch=1)
    with pytest.raises(RuntimeError, match="not started"):
        await gc.submit(1)
    gc.start()
    writer.gate.clear()
    held = asyncio.create_task(gc.submit(1))  # in the writer
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(gc.submit(2))  # behind it
    await asyncio.sleep(0.01)
    await gc.close()
    with pytest.raises(asyncio.CancelledError):
        await held
    with pytest.raises(RuntimeError, match="closed"):
        await queued


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit("t6", Writer(), writers=0, max_batch=1)


class FakeSessions:
    """Stands in for an async_sessionmaker: ``begin()`` yields a token, and its commit (the
    context's exit) fails when told to, after the block ran, as a lost connection would."""

    def __init__(self, commit_fails: bool) -> None:
        self.commit_fails = commit_fails

    def begin(self) -> FakeSessions:
        return self

    async def __aenter__(self) -> str:
        return "session"

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and self.commit_fails:
            raise ConnectionResetError("lost at commit")


class Counted:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> None:
        self.n += 1


async def _run(
    batch: list[int], *, commit_fails: bool = False, refuse: bool = False, landed: bool = False
) -> tuple[list[int | BaseException], list[int], Counted]:
    from snapshoe.kernel.batching import together_or_alone

    alone_calls: list[int] = []
    fallbacks = Counted()

    async def write(session: object, items: list[int]) -> list[int | BaseException]:
        assert session == "session"
        if refuse:
            raise ValueError("duplicate key")
        return [10 * i for i in items]

    async def did_land(prepared: object) -> bool:
        assert prepared == [10 * i for i in batch]
        return landed

    async def alone(i: int) -> int:
        alone_calls.append(i)
        if i == 2:
            raise KeyError(i)
        return -i

    results = await together_or_alone(
        FakeSessions(commit_fails),  # type: ignore[arg-type]
        batch,
        write=write,
        landed=did_land,
        alone=alone,
        fallbacks=fallbacks,  # type: ignore[arg-type]
    )
    return results, alone_calls, fallbacks


async def test_together_or_alone_writes_a_good_batch_once() -> None:
    results, alone_calls, fallbacks = await _run([1, 2, 3])
    assert results == [10, 20, 30]
    assert (alone_calls, fallbacks.n) == ([], 0)


async def test_a_refused_batch_is_written_item_by_item_each_with_its_own_answer() -> None:
    results, alone_calls, fallbacks = await _run([1, 2, 3], refuse=True)
    assert results[0] == -1
    assert isinstance(results[1], KeyError)
    assert results[2] == -3
    assert (alone_calls, fallbacks.n) == ([1, 2, 3], 1)


async def test_a_commit_lost_on_its_way_is_looked_up_before_anything_is_written_again() -> None:
    landed = await _run([1, 2, 3], commit_fails=True, landed=True)
    assert landed == ([10, 20, 30], [], landed[2])
    assert landed[2].n == 0
    lost = await _run([1, 2, 3], commit_fails=True, landed=False)
    assert lost[0][0] == -1
    assert (lost[1], lost[2].n) == ([1, 2, 3], 1)


async def test_a_batch_of_one_is_written_alone_at_once() -> None:
    results, alone_calls, fallbacks = await _run([3])
    assert (results, alone_calls, fallbacks.n) == ([-3], [3], 0)


class _Sessions:
    """Stands in for kernel.db.Sessions: ``begin()`` yields nothing and commits nothing."""

    def begin(self) -> Any:
        @contextlib.asynccontextmanager
        async def tx() -> AsyncIterator[None]:
            yield None

        return tx()


def _lost_commit(stage: str) -> None:
    if stage in ("committed", "landed"):
        raise ConnectionError(f"lost at {stage}")


async def test_a_lost_commit_nobody_can_look_up_is_outcome_unknown_and_writes_nothing_alone() -> (
    None
):
    alone_calls: list[int] = []

    async def write(_: Any, batch: list[int]) -> list[int]:
        return [2 * i for i in batch]

    async def landed(_: Any) -> bool:
        raise AssertionError("the seam fails the look first")

    async def alone(i: int) -> int:
        alone_calls.append(i)
        return 2 * i

    FAULTS["t-unknown"] = _lost_commit
    try:
        with pytest.raises(OutcomeUnknown):
            await together_or_alone(
                _Sessions(),  # type: ignore[arg-type]
                [1, 2, 3],
                write=write,
                landed=landed,
                alone=alone,
                fallbacks=PromCounter("t_unknown_fallbacks", "test"),
                name="t-unknown",
            )
    finally:
        FAULTS.pop("t-unknown")
    assert alone_calls == []  # never written again, never "failed" as if it had not landed


async def test_a_lost_commit_that_landed_answers_what_was_written() -> None:
    async def write(_: Any, batch: list[int]) -> list[int]:
        return [2 * i for i in batch]

    async def landed(_: Any) -> bool:
        return True

    async def alone(i: int) -> int:
        raise AssertionError("a landed batch is not written again")

    FAULTS["t-landed"] = lambda stage: _lost_commit(stage) if stage == "committed" else None
    try:
        results = await together_or_alone(
            _Sessions(),  # type: ignore[arg-type]
            [1, 2],
            write=write,
            landed=landed,
            alone=alone,
            fallbacks=PromCounter("t_landed_fallbacks", "test"),
            name="t-landed",
        )
    finally:
        FAULTS.pop("t-landed")
    assert results == [2, 4]
