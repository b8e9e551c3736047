"""Where the sandbox PG keeps its state: payments, the order index, billing keys, idempotency
records, charge counts and the run-time knobs.

Two stores with one interface:

- ``RedisStore`` (default): keys under ``{namespace}:sandbox_pg:``, kept ``retention_seconds``
  (billing keys are kept until deleted, as a PG keeps them: a draw may charge weeks later).
  A sandbox restart keeps every payment, so a reconciler asking about an old order still gets
  an answer; several sandbox workers share one state (the order lock is a Redis lock).
- ``MemoryStore``: plain dicts and asyncio locks, for unit tests and runs without Redis; the
  state dies with the process and is only consistent within one process.

Mutations of a payment run under a per-order lock, held only for the read-check-write (never
across the latency knob or a lost response), so two confirms of one order are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from snapshoe.sandbox_pg.domain import BillingKey, Payment
from snapshoe.sandbox_pg.settings import Knobs

LOCK_TTL_MS = 10_000
LOCK_WAIT_SECONDS = 10.0
# A claimed idempotency key whose request died (crash) is freed after this.
PROCESSING_TTL_SECONDS = 60
_PROCESSING = b'{"state":"processing"}'


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Charges:
    order_id: str
    charges: int = 0
    charged_amount: int = 0
    refunds: int = 0
    refunded_amount: int = 0


class LockTimeout(Exception):
    pass


class Store(Protocol):
    async def ping(self) -> None: ...
    async def get(self, payment_key: str) -> Payment | None: ...
    async def put(self, payment: Payment) -> None: ...
    async def order_payment_key(self, order_id: str) -> str | None: ...
    async def set_order_payment(self, order_id: str, payment_key: str) -> None: ...
    def lock(self, order_id: str) -> contextlib.AbstractAsyncContextManager[None]: ...
    async def get_billing(self, billing_key: str) -> BillingKey | None: ...
    async def put_billing(self, billing: BillingKey) -> None: ...

    async def claim(self, scope: str) -> StoredResponse | bool | None:
        """Claim an idempotency scope. ``None``: claimed, go ahead; ``True``: another request
        holds it now; a ``StoredResponse``: the first request's response, to replay."""
        ...

    async def finish(self, scope: str, response: StoredResponse) -> None: ...
    async def release(self, scope: str) -> None: ...
    async def add_charge(self, order_id: str, amount: int) -> None: ...
    async def add_refund(self, order_id: str, amount: int) -> None: ...
    async def charges(self, order_id: str) -> Charges: ...
    async def knobs(self) -> Knobs | None: ...
    async def set_knobs(self, knobs: Knobs | None) -> None: ...
    async def close(self) -> None: ...


def idempotency_scope(secret: str, method: str, path: str, key: str) -> str:
    """Toss scopes a key by (key, API key, URL, method); the body is not compared."""
    raw = "\x00".join((secret, method.upper(), path, key))
    return hashlib.sha256(raw.encode()).hexdigest()


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


class RedisStore:
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def __init__(self, redis: Redis, namespace: str, retention_seconds: int) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:sandbox_pg"
        self.retention = retention_seconds
        self._release = redis.register_script(self._RELEASE)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def ping(self) -> None:
        await self.redis.ping()

    async def get(self, payment_key: str) -> Payment | None:
        raw = await self.redis.get(self._k("payment", payment_key))
        return Payment.from_dict(orjson.loads(raw)) if raw else None

    async def put(self, payment: Payment) -> None:
        await self.redis.set(
            self._k("payment", payment.payment_key), _dumps(payment.to_dict()), ex=self.retention
        )

    async def order_payment_key(self, order_id: str) -> str | None:
        value = await self.redis.get(self._k("order", order_id))
        return str(value) if value else None

    async def set_order_payment(self, order_id: str, payment_key: str) -> None:
        await self.redis.set(self._k("order", order_id), payment_key, ex=self.retention)

    async def get_billing(self, billing_key: str) -> BillingKey | None:
        raw = await self.redis.get(self._k("billing", billing_key))
        return BillingKey.from_dict(orjson.loads(raw)) if raw else None

    async def put_billing(self, billing: BillingKey) -> None:
        await self.redis.set(self._k("billing", billing.billing_key), _dumps(billing.to_dict()))

    @contextlib.asynccontextmanager
    async def lock(self, order_id: str) -> AsyncIterator[None]:
        name = self._k("lock", order_id)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.002
        while not await self.redis.set(name, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise LockTimeout(order_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)
        try:
            yield
        finally:
            await self._release(keys=[name], args=[token])

    async def claim(self, scope: str) -> StoredResponse | bool | None:
        name = self._k("idem", scope)
        if await self.redis.set(name, _PROCESSING, nx=True, ex=PROCESSING_TTL_SECONDS):
            return None
        raw = await self.redis.get(name)
        if raw is None:  # expired between the two calls: try once more
            ok = await self.redis.set(name, _PROCESSING, nx=True, ex=PROCESSING_TTL_SECONDS)
            return None if ok else True
        data = orjson.loads(raw)
        if data.get("state") == "processing":
            return True
        return StoredResponse(int(data["status"]), data["body"])

    async def finish(self, scope: str, response: StoredResponse) -> None:
        await self.redis.set(
            self._k("idem", scope),
            _dumps({"state": "done", "status": response.status, "body": response.body}),
            ex=self.retention,
        )

    async def release(self, scope: str) -> None:
        await self.redis.delete(self._k("idem", scope))

    async def add_charge(self, order_id: str, amount: int) -> None:
        await self._count(order_id, "charges", "charged_amount", amount)

    async def add_refund(self, order_id: str, amount: int) -> None:
        await self._count(order_id, "refunds", "refunded_amount", amount)

    async def _count(self, order_id: str, count: str, total: str, amount: int) -> None:
        name = self._k("charges", order_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(name, count, 1)
            pipe.hincrby(name, total, amount)
            pipe.expire(name, self.retention)
            await pipe.execute()

    async def charges(self, order_id: str) -> Charges:
        data = await self.redis.hgetall(self._k("charges", order_id))
        n = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in data.items()}
        return Charges(
            order_id,
            n.get("charges", 0),
            n.get("charged_amount", 0),
            n.get("refunds", 0),
            n.get("refunded_amount", 0),
        )

    async def knobs(self) -> Knobs | None:
        raw = await self.redis.get(self._k("knobs"))
        return Knobs.model_validate_json(raw) if raw else None

    async def set_knobs(self, knobs: Knobs | None) -> None:
        if knobs is None:
            await self.redis.delete(self._k("knobs"))
        else:
            await self.redis.set(self._k("knobs"), knobs.model_dump_json())

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryStore:
    def __init__(self) -> None:
        self.payments: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, str] = {}
        self.billing: dict[str, dict[str, Any]] = {}
        self.idem: dict[str, StoredResponse | None] = {}
        self.counts: dict[str, Charges] = {}
        self._knobs: Knobs | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    async def ping(self) -> None:
        return None

    async def get(self, payment_key: str) -> Payment | None:
        data = self.payments.get(payment_key)
        # A copy, as from Redis: a caller's change is not stored until put().
        return Payment.from_dict(orjson.loads(_dumps(data))) if data else None

    async def put(self, payment: Payment) -> None:
        self.payments[payment.payment_key] = payment.to_dict()

    async def order_payment_key(self, order_id: str) -> str | None:
        return self.orders.get(order_id)

    async def set_order_payment(self, order_id: str, payment_key: str) -> None:
        self.orders[order_id] = payment_key

    async def get_billing(self, billing_key: str) -> BillingKey | None:
        data = self.billing.get(billing_key)
        return BillingKey.from_dict(dict(data)) if data else None

    async def put_billing(self, billing: BillingKey) -> None:
        self.billing[billing.billing_key] = billing.to_dict()

    @contextlib.asynccontextmanager
    async def lock(self, order_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(order_id, asyncio.Lock())
        async with lock:
            yield

    async def claim(self, scope: str) -> StoredResponse | bool | None:
        if scope not in self.idem:
            self.idem[scope] = None
            return None
        stored = self.idem[scope]
        return True if stored is None else stored

    async def finish(self, scope: str, response: StoredResponse) -> None:
        self.idem[scope] = response

    async def release(self, scope: str) -> None:
        self.idem.pop(scope, None)

    async def add_charge(self, order_id: str, amount: int) -> None:
        c = self.counts.get(order_id, Charges(order_id))
        self.counts[order_id] = Charges(
            order_id, c.charges + 1, c.charged_amount + amount, c.refunds, c.refunded_amount
        )

    async def add_refund(self, order_id: str, amount: int) -> None:
        c = self.counts.get(order_id, Charges(order_id))
        self.counts[order_id] = Charges(
            order_id, c.charges, c.charged_amount, c.refunds + 1, c.refunded_amount + amount
        )

    async def charges(self, order_id: str) -> Charges:
        return self.counts.get(order_id, Charges(order_id))

    async def knobs(self) -> Knobs | None:
        return self._knobs

    async def set_knobs(self, knobs: Knobs | None) -> None:
        self._knobs = knobs

    async def close(self) -> None:
        return None
