"""``Idempotency-Key`` semantics of the IETF draft (draft-ietf-httpapi-idempotency-key-header),
kept in Redis so that a replayed or duplicate request is answered without touching the database
(most of a drop's requests are rejections; they must stay cheap).

- first use of a key: the request proceeds; the key is held as *pending* with a short lease;
- same key and same body while the first is in flight: 409 ``idempotency_key_in_use``;
- same key, another body: 422 ``idempotency_key_reused``;
- same key and body after completion: the stored response (status and body) is replayed;
- keys are scoped per user and per endpoint and kept ``ttl`` (>= 24 h) after completion.

A caller may name counter keys (``count``) with an answer, a completion or an abandon: each is
INCRed (and kept :data:`COUNT_SECONDS`) in the same script, so counting what a service answers
(orders' refusals per product and reason) costs no round trip of its own. An answer counts only
when it was stored (a replay or a conflict is not this request's answer).

Redis is not the only guard: a service whose effect must never happen twice also stores the key
with a unique constraint next to the effect (orders does), so a lost Redis key cannot create a
second order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import Request
from redis.asyncio import Redis

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.redis import ScriptPipeline
from snapshoe.kernel.redis import key as redis_key
from snapshoe.kernel.settings import Settings

HEADER = "Idempotency-Key"
KEEP_SECONDS = 26 * 3600  # >= 24 h, with margin for clock skew between client and us
PENDING_LEASE_SECONDS = 60  # a crashed request frees its key after this
COUNT_SECONDS = 24 * 3600  # how long a counter named with ``count`` lives after its last INCR

# Every KEYS entry from ``first`` on is a counter: INCR it and keep it ARGV[ttl] seconds.
_COUNT = """
local function count(first, ttl)
  for i = first, #KEYS do
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
"""

# A key already known: the same request (replay, or still in progress) or another one.
_KNOWN = """
if fp ~= ARGV[1] then return {'reused'} end
local r = redis.call('HMGET', KEYS[1], 'state', 'status', 'body')
if r[1] == 'pending' then return {'in_use'} end
return {'replay', r[2], r[3]}
"""

_BEGIN = (
    """
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'pending')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'proceed'}
end
"""
    + _KNOWN
)

_COMPLETE = (
    _COUNT
    + """
count(2, ARGV[5])
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# Begin and complete in one round trip, for an answer known before any work (a refusal the
# service can give on its own): stored like any completed request, or, if the key is already
# known, the same outcomes as _BEGIN.
_ANSWER = (
    _COUNT
    + """
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  count(2, ARGV[5])
  return {'stored'}
end
"""
    + _KNOWN
)

_ABANDON = (
    _COUNT
    + """
count(2, ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'fp', 'state')
if r[1] == ARGV[1] and r[2] == 'pending' then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


@dataclass(frozen=True, slots=True)
class Begin:
    outcome: Literal["proceed", "replay"]
    status: int = 0
    body: Any = None


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def require_key(request: Request) -> str:
    """The request's key, validated: 1..255 visible ASCII characters."""
    value = request.headers.get(HEADER)
    if value is None or not value.strip():
        raise Problem(400, "idempotency_key_missing", detail=f"The {HEADER} header is required")
    value = value.strip().strip('"')
    if not (1 <= len(value) <= 255) or not all(33 <= ord(c) <= 126 for c in value):
        raise Problem(
            400, "idempotency_key_invalid", detail=f"{HEADER}: 1..255 visible ASCII characters"
        )
    return value


class IdempotencyStore:
    def __init__(self, redis: Redis, settings: Settings, scope: str) -> None:
        self._redis = redis
        self._settings = settings
        self._scope = scope
        self._begin = redis.register_script(_BEGIN)
        self._complete = redis.register_script(_COMPLETE)
        self._abandon = redis.register_script(_ABANDON)
        self._answer = redis.register_script(_ANSWER)
        self._run = ScriptPipeline(redis)

    async def aclose(self) -> None:
        await self._run.aclose()

    def _key(self, user_id: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]  # bounded key length
        return redis_key(self._settings, "idem", self._scope, user_id, digest)

    async def begin(self, user_id: str, key: str, fp: str) -> Begin:
        result = await self._run(
            self._begin, [self._key(user_id, key)], [fp, PENDING_LEASE_SECONDS]
        )
        return self._outcome(result)

    async def answer(
        self,
        user_id: str,
        key: str,
        fp: str,
        status: int,
        body: Any,
        *,
        count: Sequence[str] = (),
    ) -> Begin:
        """Record ``status``/``body`` as this key's response unless the key is known: one round
        trip. ``proceed`` means it was stored (send it; the ``count`` keys were INCRed);
        otherwise as :meth:`begin`."""
        result = await self._run(
            self._answer,
            [self._key(user_id, key), *count],
            [fp, status, orjson.dumps(body), KEEP_SECONDS, COUNT_SECONDS],
        )
        if result[0] == "stored":
            return Begin("proceed")
        return self._outcome(result)

    @staticmethod
    def _outcome(result: list[Any]) -> Begin:
        outcome = result[0]
        if outcome == "proceed":
            return Begin("proceed")
        if outcome == "reused":
            raise Problem(
                422,
                "idempotency_key_reused",
                detail="This Idempotency-Key was used with a different request",
            )
        if outcome == "in_use":
            raise Problem(
                409,
                "idempotency_key_in_use",
                detail="A request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        return Begin("replay", int(result[1]), orjson.loads(result[2]))

    async def complete(
        self,
        user_id: str,
        key: str,
        fp: str,
        status: int,
        body: Any,
        *,
        count: Sequence[str] = (),
    ) -> None:
        await self._run(
            self._complete,
            [self._key(user_id, key), *count],
            [fp, status, orjson.dumps(body), KEEP_SECONDS, COUNT_SECONDS],
        )

    async def abandon(self, user_id: str, key: str, fp: str, *, count: Sequence[str] = ()) -> None:
        """Free the key after an unexpected failure, so the client's retry can proceed."""
        await self._run(self._abandon, [self._key(user_id, key), *count], [fp, COUNT_SECONDS])
