"""The Redis Idempotency-Key store against a real Redis (the test slot's db)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from tests.support.platform import make_test_settings

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.idempotency import IdempotencyStore, fingerprint
from snapshoe.kernel.redis import create_redis


@pytest.fixture
async def store() -> AsyncIterator[IdempotencyStore]:
    settings = make_test_settings(namespace=f"snapshoe_idem_{uuid.uuid4().hex[:8]}")
    redis: Redis = create_redis(settings)
    store = IdempotencyStore(redis, settings, "orders")
    yield store
    await store.aclose()
    async for k in redis.scan_iter(match=f"{settings.namespace}:*"):
        await redis.delete(k)
    await redis.aclose()


FP = fingerprint("POST", "/api/orders", {"lines": [{"item_id": "a", "quantity": 1}]})
OTHER = fingerprint("POST", "/api/orders", {"lines": [{"item_id": "b", "quantity": 1}]})


async def test_first_use_proceeds_then_replays_the_stored_response(
    store: IdempotencyStore,
) -> None:
    assert (await store.begin("u1", "k", FP)).outcome == "proceed"
    with pytest.raises(Problem) as in_use:
        await store.begin("u1", "k", FP)
    assert (in_use.value.status, in_use.value.code) == (409, "idempotency_key_in_use")
    await store.complete("u1", "k", FP, 201, {"id": "o1"})
    replay = await store.begin("u1", "k", FP)
    assert (replay.outcome, replay.status, replay.body) == ("replay", 201, {"id": "o1"})


async def test_same_key_other_body_is_422_and_keys_are_per_user(store: IdempotencyStore) -> None:
    await store.begin("u1", "k", FP)
    await store.complete("u1", "k", FP, 201, {"id": "o1"})
    with pytest.raises(Problem) as reused:
        await store.begin("u1", "k", OTHER)
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    assert (await store.begin("u2", "k", OTHER)).outcome == "proceed"


async def test_abandon_frees_a_pending_key_only(store: IdempotencyStore) -> None:
    await store.begin("u1", "k", FP)
    await store.abandon("u1", "k", FP)
    assert (await store.begin("u1", "k", FP)).outcome == "proceed"
    await store.complete("u1", "k", FP, 409, {"code": "sold_out"})
    await store.abandon("u1", "k", FP)  # a completed key is kept
    assert (await store.begin("u1", "k", FP)).status == 409


async def test_answer_stores_in_one_step_and_respects_a_known_key(
    store: IdempotencyStore,
) -> None:
    first = await store.answer("u1", "k", FP, 409, {"code": "sold_out"})
    assert first.outcome == "proceed"
    replay = await store.begin("u1", "k", FP)
    assert (replay.outcome, replay.status, replay.body) == ("replay", 409, {"code": "sold_out"})
    again = await store.answer("u1", "k", FP, 409, {"code": "sold_out"})
    assert again.outcome == "replay"
    with pytest.raises(Problem) as reused:
        await store.answer("u1", "k", OTHER, 409, {})
    assert reused.value.code == "idempotency_key_reused"
    await store.begin("u1", "pending", FP)
    with pytest.raises(Problem) as in_use:
        await store.answer("u1", "pending", FP, 409, {})
    assert in_use.value.code == "idempotency_key_in_use"


async def test_200_concurrent_first_uses_let_exactly_one_proceed(store: IdempotencyStore) -> None:
    async def attempt() -> str:
        try:
            return (await store.begin("u1", "race", FP)).outcome
        except Problem as p:
            return p.code

    outcomes = await asyncio.gather(*(attempt() for _ in range(200)))
    assert outcomes.count("proceed") == 1
    assert outcomes.count("idempotency_key_in_use") == 199


def _pipelined() -> tuple[float, float]:
    """(pipelines, calls in them) of the script pipeline, from this process's registry."""
    from prometheus_client import REGISTRY

    count = REGISTRY.get_sample_value(
        "snapshoe_group_commit_batch_size_count", {"name": "redis_scripts"}
    )
    total = REGISTRY.get_sample_value(
        "snapshoe_group_commit_batch_size_sum", {"name": "redis_scripts"}
    )
    return count or 0.0, total or 0.0


async def test_500_concurrent_calls_share_pipelines_and_each_gets_its_own_answer(
    store: IdempotencyStore,
) -> None:
    batches0, calls0 = _pipelined()

    # 250 keys, each asked twice at once (proceed + in_use), then each answered or replayed.
    async def attempt(k: int) -> str:
        try:
            return (await store.begin(f"u{k // 2 % 7}", f"k{k // 2}", FP)).outcome
        except Problem as p:
            return p.code

    outcomes = await asyncio.gather(*(attempt(k) for k in range(500)))
    assert outcomes.count("proceed") == 250
    assert outcomes.count("idempotency_key_in_use") == 250
    batches, calls = _pipelined()
    assert calls - calls0 == 500
    assert batches - batches0 < 500  # they went together
    stored = await asyncio.gather(
        *(store.answer(f"x{k}", "k", FP, 409, {"code": "sold_out", "n": k}) for k in range(200))
    )
    assert {b.outcome for b in stored} == {"proceed"}
    replays = await asyncio.gather(*(store.begin(f"x{k}", "k", FP) for k in range(200)))
    assert [(r.status, r.body) for r in replays] == [
        (409, {"code": "sold_out", "n": k}) for k in range(200)
    ]


async def test_pipelined_calls_survive_a_script_flush(store: IdempotencyStore) -> None:
    """After a Redis restart or SCRIPT FLUSH the pipeline's EVALSHAs fail with NOSCRIPT;
    nothing ran, so each is sent again and the script loads itself."""
    assert (await store.begin("warm", "k", FP)).outcome == "proceed"
    await store._redis.script_flush()
    outcomes = await asyncio.gather(*(store.begin(f"f{k}", "k", FP) for k in range(100)))
    assert {o.outcome for o in outcomes} == {"proceed"}
    again = await asyncio.gather(
        *(store.begin(f"f{k}", "k", FP) for k in range(100)), return_exceptions=True
    )
    assert all(isinstance(p, Problem) and p.code == "idempotency_key_in_use" for p in again)


async def test_a_pipeline_that_meets_noscript_sends_those_calls_again(
    store: IdempotencyStore,
) -> None:
    from snapshoe.kernel.redis import ScriptPipeline

    redis = store._redis
    echo = redis.register_script("return ARGV[1]")
    boom = redis.register_script("return redis.error_reply('boom ' .. ARGV[1])")
    pipeline = ScriptPipeline(redis)
    await redis.script_flush()
    results = await pipeline._run([(echo, [], ["a"]), (boom, [], ["x"]), (echo, [], ["b"])])
    assert results[0] == "a"
    assert results[2] == "b"
    assert "boom x" in str(results[1])  # a script's own error stays that caller's
    assert await redis.script_exists(echo.sha) == [True]
