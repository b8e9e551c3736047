"""The Redis stock gate: admission control in front of the DB ledger.

One Lua script per reservation checks, atomically and all-or-nothing: the gate is open, the
reservation id was not already applied, the drop is open, every line's stock, and the buyer's
per-product limit; then it decrements. Sold-out and over-limit requests end here, without
touching the database.

Keys (``ns`` = settings namespace)::

    ns:pgate:ready                  the gate epoch; missing = gate closed (flushed / rebuilding)
    ns:pgate:rebuild-lock           who rebuilds (SET NX PX)
    ns:pgate:{pid}:meta             hash release_at (epoch ms), limit
    ns:pgate:{pid}:avail            hash item_id -> units the gate may still admit
    ns:pgate:{pid}:held             hash buyer_id -> units in ACTIVE+COMMITTED reservations
    ns:pgate:{pid}:res:<rid>        the epoch under which reservation <rid> was applied

``{pid}`` is a hash tag: a product's keys share one slot. A reservation's marker is tagged with
its first product, so a single-product reservation touches that slot plus the ready key. The
gate targets a standalone Redis (or a primary with replicas); a multi-product reservation and
the ready key cross slots, which a Redis Cluster would refuse (see docs/products.md).

Every value written to the ledger carries the epoch that admitted it; the DB refuses a write
from an older epoch (``gate_state``), so a rebuilt gate can never be double counted.

Which Redis? A Redis restarted from an older snapshot, or a replica promoted while it lagged,
still has the ready key but has lost admissions (``held``, ``avail``). The gate therefore
knows what it was built on: ``gate_state`` keeps the epoch and the Redis ``run_id`` (INFO
server) of the last rebuild, and each process caches both. The reserve script is passed the
cached epoch (``stale`` when the ready key holds another: an older snapshot, or a rebuild by
another process); every new Redis connection reads ``run_id`` before its first command, and a
check every ``gate_check_seconds`` reads it too: another run id marks the gate ``suspect``,
and the service verifies, and rebuilds from the ledger, before it takes that answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from snapshoe.products.domain import ProductLines

RES_TTL_SECONDS = 7 * 24 * 3600

# ARGV: buyer, now_ms, marker ttl, np, the epoch the caller expects, then per product n, items.
# Returns {'ok', epoch} | {'replay', epoch} | {'closed'} | {'stale', epoch} | {'unknown_product', p}
# | {'unknown_item', item...} | {'not_open', p} | {'sold_out', item...} | {'limit', p}
RESERVE_LUA = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'closed'} end
if epoch ~= ARGV[5] then return {'stale', epoch} end
if redis.call('GET', KEYS[2]) == epoch then return {'replay', epoch} end
local buyer = ARGV[1]
local now = tonumber(ARGV[2])
local np = tonumber(ARGV[4])
local a = 6
local unknown, soldout, plan, held = {}, {}, {}, {}
local over = nil
for p = 0, np - 1 do
  local meta, avail, heldkey = KEYS[3 + 3 * p], KEYS[4 + 3 * p], KEYS[5 + 3 * p]
  local m = redis.call('HMGET', meta, 'release_at', 'limit')
  if not m[1] then return {'unknown_product', tostring(p)} end
  if now < tonumber(m[1]) then return {'not_open', tostring(p)} end
  local n = tonumber(ARGV[a]); a = a + 1
  local units = 0
  for i = 1, n do
    local item, qty = ARGV[a], tonumber(ARGV[a + 1]); a = a + 2
    local have = redis.call('HGET', avail, item)
    if not have then
      unknown[#unknown + 1] = item
    elseif tonumber(have) < qty then
      soldout[#soldout + 1] = item
    end
    units = units + qty
    plan[#plan + 1] = {avail, item, qty}
  end
  local limit = tonumber(m[2] or '0')
  if limit > 0 and over == nil then
    local h = tonumber(redis.call('HGET', heldkey, buyer) or '0')
    if h + units > limit then over = p end
  end
  held[#held + 1] = {heldkey, units}
end
if #unknown > 0 then
  table.insert(unknown, 1, 'unknown_item'); return unknown
end
if #soldout > 0 then
  table.insert(soldout, 1, 'sold_out'); return soldout
end
if over ~= nil then return {'limit', tostring(over)} end
for _, s in ipairs(plan) do redis.call('HINCRBY', s[1], s[2], -s[3]) end
for _, h in ipairs(held) do redis.call('HINCRBY', h[1], buyer, h[2]) end
redis.call('SET', KEYS[2], epoch, 'EX', tonumber(ARGV[3]))
return {'ok', epoch}
"""

# Give units back (undo of an admission the DB refused, or a release/refund), only if the gate
# is still the one of ``epoch``; a rebuilt gate already reflects the ledger.
# KEYS: ready, res (or '' when not undoing), then avail, held per product.
# ARGV: epoch, buyer, np, then per product: n, item, qty, ...
RETURN_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if KEYS[2] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[2])
end
local buyer = ARGV[2]
local np = tonumber(ARGV[3])
local a = 4
for p = 0, np - 1 do
  local avail, heldkey = KEYS[3 + 2 * p], KEYS[4 + 2 * p]
  local n = tonumber(ARGV[a]); a = a + 1
  local units = 0
  for i = 1, n do
    redis.call('HINCRBY', avail, ARGV[a], tonumber(ARGV[a + 1]))
    units = units + tonumber(ARGV[a + 1])
    a = a + 2
  end
  if redis.call('HINCRBY', heldkey, buyer, -units) <= 0 then redis.call('HDEL', heldkey, buyer) end
end
return 1
"""

# Stock delta of one item (admin restock/correction), epoch-checked.
ADJUST_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], tonumber(ARGV[3]))
return 1
"""

# Make a product (meta) and its items known to the gate, epoch-checked; never overwrites a
# counter that exists (it may already have admitted reservations).
# KEYS: ready, meta, avail. ARGV: epoch, release_at_ms, limit, item, avail, ...
REGISTER_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'release_at', ARGV[2], 'limit', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Open the gate at ``epoch`` unless a newer rebuild already did.
OPEN_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer to a reservation."""

    # ok | replay | closed | stale | unknown_product | unknown_item | not_open | sold_out | limit
    outcome: str
    epoch: int = 0
    product_id: str | None = None
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProductGate:
    """What the gate holds for one product."""

    release_at_ms: int
    limit: int
    avail: dict[str, int]
    held: dict[str, int]


class Gate:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:pgate"
        self.ready_key = f"{self.prefix}:ready"
        self.lock_key = f"{self.prefix}:rebuild-lock"
        # register_script: EVALSHA, loading the script once (and again after SCRIPT FLUSH).
        self._reserve = redis.register_script(RESERVE_LUA)
        self._return = redis.register_script(RETURN_LUA)
        self._adjust = redis.register_script(ADJUST_LUA)
        self._register = redis.register_script(REGISTER_LUA)
        self._open = redis.register_script(OPEN_LUA)
        # What this process knows the gate was built on (gate_state); None until verified.
        self.expected_epoch: int | None = None
        self.expected_run_id: str | None = None
        # Set when a connection or the periodic check met another Redis: verify before use.
        self.suspect = False

    def trust(self, epoch: int, run_id: str) -> None:
        self.expected_epoch, self.expected_run_id = epoch, run_id
        self.suspect = False

    def seen(self, run_id: str) -> None:
        """A Redis connection (new, or the periodic check) reports the server's run id."""
        if self.expected_run_id is not None and run_id != self.expected_run_id:
            self.suspect = True

    async def run_id(self) -> str:
        info = await self.redis.info("server")
        return str(info["run_id"])

    def meta_key(self, pid: str) -> str:
        return f"{self.prefix}:{{{pid}}}:meta"

    def avail_key(self, pid: str) -> str:
        return f"{self.prefix}:{{{pid}}}:avail"

    def held_key(self, pid: str) -> str:
        return f"{self.prefix}:{{{pid}}}:held"

    def res_key(self, first_pid: str, rid: str) -> str:
        return f"{self.prefix}:{{{first_pid}}}:res:{rid}"

    async def epoch(self) -> int | None:
        value = await self.redis.get(self.ready_key)
        return int(value) if value is not None else None

    async def reserve(
        self, rid: str, buyer: str, groups: Sequence[ProductLines], now_ms: int
    ) -> Verdict:
        keys = [self.ready_key, self.res_key(groups[0].product_id, rid)]
        expected = "" if self.expected_epoch is None else str(self.expected_epoch)
        args: list[str | int] = [buyer, now_ms, RES_TTL_SECONDS, len(groups), expected]
        for g in groups:
            keys += [self.meta_key(g.product_id), self.avail_key(g.product_id)]
            keys.append(self.held_key(g.product_id))
            args.append(len(g.lines))
            for line in g.lines:
                args += [line.item_id, line.quantity]
        raw = await self._reserve(keys=keys, args=args)
        outcome = str(raw[0])
        rest = [str(x) for x in raw[1:]]
        if outcome in ("ok", "replay", "stale"):
            return Verdict(outcome, epoch=int(rest[0]))
        if outcome in ("not_open", "limit", "unknown_product"):
            return Verdict(outcome, product_id=groups[int(rest[0])].product_id)
        return Verdict(outcome, item_ids=tuple(rest))

    async def give_back(
        self,
        epoch: int,
        buyer: str,
        groups: Sequence[ProductLines],
        *,
        undo_rid: str | None = None,
    ) -> bool:
        """Return units to the gate (release/refund, or undo of an admission with
        ``undo_rid``). A no-op when the gate was rebuilt since ``epoch``."""
        res = self.res_key(groups[0].product_id, undo_rid) if undo_rid else ""
        keys = [self.ready_key, res]
        args: list[str | int] = [epoch, buyer, len(groups)]
        for g in groups:
            keys += [self.avail_key(g.product_id), self.held_key(g.product_id)]
            args.append(len(g.lines))
            for line in g.lines:
                args += [line.item_id, line.quantity]
        return bool(await self._return(keys=keys, args=args))

    async def adjust(self, epoch: int, pid: str, item_id: str, delta: int) -> bool:
        keys = [self.ready_key, self.avail_key(pid)]
        return bool(await self._adjust(keys=keys, args=[epoch, item_id, delta]))

    async def register(
        self, epoch: int, pid: str, release_at_ms: int, limit: int, avail: Mapping[str, int]
    ) -> bool:
        args: list[str | int] = [epoch, release_at_ms, limit]
        for item_id, units in avail.items():
            args += [item_id, units]
        keys = [self.ready_key, self.meta_key(pid), self.avail_key(pid)]
        return bool(await self._register(keys=keys, args=args))

    async def stock(self, pid: str, item_ids: Sequence[str]) -> dict[str, int | None]:
        """Live units per item (one HMGET); None when the gate does not know the item."""
        if not item_ids:
            return {}
        values = await self.redis.hmget(self.avail_key(pid), list(item_ids))
        return {
            i: (int(v) if v is not None else None) for i, v in zip(item_ids, values, strict=True)
        }

    async def read(self, pids: Sequence[str]) -> dict[str, ProductGate | None]:
        out: dict[str, ProductGate | None] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.hgetall(self.meta_key(pid))
                pipe.hgetall(self.avail_key(pid))
                pipe.hgetall(self.held_key(pid))
            raw = await pipe.execute()
        for i, pid in enumerate(pids):
            meta, avail, held = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
            if not meta:
                out[pid] = None
                continue
            out[pid] = ProductGate(
                release_at_ms=int(meta.get("release_at", 0)),
                limit=int(meta.get("limit", 0)),
                avail={k: int(v) for k, v in avail.items()},
                held={k: int(v) for k, v in held.items()},
            )
        return out

    async def close(self) -> None:
        await self.redis.delete(self.ready_key)

    async def write_all(
        self,
        products: Mapping[str, ProductGate],
        applied: Mapping[str, str],
        epoch: int,
    ) -> None:
        """Replace the gate's data with ``products`` and the applied reservation markers
        (rid -> first product id). The gate stays closed until :meth:`open`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid, g in products.items():
                pipe.delete(self.meta_key(pid), self.avail_key(pid), self.held_key(pid))
                pipe.hset(
                    self.meta_key(pid),
                    mapping={"release_at": g.release_at_ms, "limit": g.limit},
                )
                if g.avail:
                    pipe.hset(self.avail_key(pid), mapping=g.avail)  # type: ignore[arg-type]
                if g.held:
                    pipe.hset(self.held_key(pid), mapping=g.held)  # type: ignore[arg-type]
            for rid, first_pid in applied.items():
                pipe.set(self.res_key(first_pid, rid), epoch, ex=RES_TTL_SECONDS)
            await pipe.execute()

    async def open(self, epoch: int) -> bool:
        return bool(await self._open(keys=[self.ready_key], args=[epoch]))

    async def try_lock(self, token: str, ttl_ms: int = 30_000) -> bool:
        return bool(await self.redis.set(self.lock_key, token, nx=True, px=ttl_ms))

    async def unlock(self, token: str) -> None:
        # Only the holder deletes its lock.
        await self.redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
            " return 0",
            1,
            self.lock_key,
            token,
        )
