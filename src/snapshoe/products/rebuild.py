"""The gate's upkeep: registering products, opening a closed gate, verifying it is the one the
ledger built (and watching for another Redis), rebuilding it from the ledger, and reconcile;
and :func:`drift`, the operator's glance at how far the gate is from the ledger."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import OperationalError

from snapshoe.kernel.clock import epoch_ms
from snapshoe.kernel.contracts.internal_operations import GateDrift
from snapshoe.kernel.errors import Problem
from snapshoe.products import repository as repo
from snapshoe.products.deps import Deps
from snapshoe.products.gate import ProductGate
from snapshoe.products.problems import gate_unavailable

log = logging.getLogger("snapshoe.products")

GATE_WAIT_SECONDS = 5.0


async def register_quietly(deps: Deps, epoch: int, row: RowMapping, avail: dict[str, int]) -> None:
    """Tell the gate; if Redis is down the rebuild will read the ledger anyway."""
    if row.get("stock_mode", "gate") != "gate":
        return  # a db_lock product never enters the gate
    try:
        await deps.gate.register(
            epoch, row["id"], epoch_ms(row["release_at"]), row["per_user_limit"], avail
        )
    except RedisError:
        log.warning("gate register failed for product %s; reconcile will repair", row["id"])


async def register_products(deps: Deps, pids: Sequence[str]) -> None:
    async with deps.sessions.begin() as session:
        epoch = await repo.epoch_shared(session)
        loaded = []
        for pid in pids:
            row = await repo.get_product(session, pid)
            if row is not None:
                loaded.append((row, await repo.items_of(session, pid)))
    for row, items in loaded:
        await register_quietly(deps, epoch, row, {i["id"]: i["available"] for i in items})


async def ensure_gate(deps: Deps) -> None:
    """Open the gate if it is closed: one caller rebuilds it from the ledger under a lock,
    everyone else waits for it to open."""
    gate = deps.gate
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATE_WAIT_SECONDS
    while await gate.epoch() is None:
        token = secrets.token_hex(8)
        if await gate.try_lock(token):
            try:
                await rebuild_gate(deps)
            finally:
                await gate.unlock(token)
            return
        if loop.time() > deadline:
            raise gate_unavailable()
        await asyncio.sleep(0.02)


async def verify_gate(deps: Deps) -> bool:
    """Is the gate's Redis the one it was built on, at the ledger's epoch (``gate_state``)?
    Then this process trusts it (caches epoch and run id). If not (a restart from an older
    snapshot, a failover, a rebuild this process missed the start of), the gate is closed and
    rebuilt from the ledger before anyone is admitted. True when the caller must ask the gate
    again (its answer came from a gate this process no longer trusts)."""
    gate = deps.gate
    before = (gate.expected_epoch, gate.expected_run_id)
    async with deps.gate_lock:
        if gate.expected_epoch is not None and before != (
            gate.expected_epoch,
            gate.expected_run_id,
        ):
            return True  # verified by another request while this one waited: ask again
        for _ in range(3):
            run_id = await gate.run_id()
            ready = await gate.epoch()
            async with deps.sessions() as session:
                epoch, built_on = await repo.gate_instance(session)
            if ready is not None and ready == epoch and built_on == run_id:
                gate.trust(epoch, run_id)
                return before != (epoch, run_id)
            if ready is not None:
                log.warning(
                    "stock gate is not the one the ledger built: rebuilding",
                    extra={
                        "gate_epoch": ready,
                        "ledger_epoch": epoch,
                        "run_id": run_id,
                        "built_on": built_on,
                    },
                )
                await gate.close()
            await ensure_gate(deps)
        raise gate_unavailable()


async def watch_gate(deps: Deps) -> None:
    """Every ``gate_check_seconds``: a Redis whose run id is not the one the gate was built on
    (behind a proxy that keeps our connections, say) is verified and rebuilt. One INFO a
    second; nothing on the request path."""
    gate = deps.gate
    while True:
        await asyncio.sleep(deps.settings.gate_check_seconds)
        try:
            if gate.expected_run_id is None:
                continue  # verified by the first reservation
            gate.seen(await gate.run_id())
            if gate.suspect:
                await verify_gate(deps)
        except (RedisError, OperationalError, Problem) as exc:
            log.warning("stock gate check failed: %r", exc)


@dataclass
class ReconcileReport:
    epoch_before: int | None
    epoch_after: int | None
    gate_was_open: bool
    repaired: bool
    differences: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        state = "repaired" if self.repaired else "consistent, left as it was"
        head = (
            f"stock gate {state}: epoch {self.epoch_before} -> {self.epoch_after}, "
            f"gate was {'open' if self.gate_was_open else 'closed'}, "
            f"{len(self.differences)} difference(s)"
        )
        return "\n".join([head, *(f"  {d}" for d in self.differences)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch_before": self.epoch_before,
            "epoch_after": self.epoch_after,
            "gate_was_open": self.gate_was_open,
            "repaired": self.repaired,
            "differences": self.differences,
        }


def _ledger_gate(
    metas: Sequence[RowMapping], stock: Sequence[RowMapping], held: Sequence[RowMapping]
) -> dict[str, ProductGate]:
    avail: dict[str, dict[str, int]] = defaultdict(dict)
    for s in stock:
        avail[s["product_id"]][s["id"]] = int(s["available"])
    holds: dict[str, dict[str, int]] = defaultdict(dict)
    for h in held:
        holds[h["product_id"]][h["buyer_id"]] = int(h["units"])
    return {
        m["id"]: ProductGate(
            release_at_ms=epoch_ms(m["release_at"]),
            limit=int(m["per_user_limit"]),
            avail=avail.get(m["id"], {}),
            held=holds.get(m["id"], {}),
        )
        for m in metas
    }


def _diff(
    want: dict[str, ProductGate], have: dict[str, ProductGate | None]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for pid, w in want.items():
        h = have.get(pid)
        if h is None:
            out.append({"product_id": pid, "kind": "product_missing"})
            continue
        if (h.release_at_ms, h.limit) != (w.release_at_ms, w.limit):
            out.append(
                {
                    "product_id": pid,
                    "kind": "meta",
                    "ledger": [w.release_at_ms, w.limit],
                    "gate": [h.release_at_ms, h.limit],
                }
            )
        for item in sorted(set(w.avail) | set(h.avail)):
            if w.avail.get(item) != h.avail.get(item):
                out.append(
                    {
                        "product_id": pid,
                        "kind": "available",
                        "item_id": item,
                        "ledger": w.avail.get(item),
                        "gate": h.avail.get(item),
                    }
                )
        for buyer in sorted(set(w.held) | set(h.held)):
            if w.held.get(buyer, 0) != h.held.get(buyer, 0):
                out.append(
                    {
                        "product_id": pid,
                        "kind": "held",
                        "buyer_id": buyer,
                        "ledger": w.held.get(buyer, 0),
                        "gate": h.held.get(buyer, 0),
                    }
                )
    return out


async def rebuild_gate(deps: Deps, *, only_if_different: bool = False) -> ReconcileReport:
    """Recount the gate from the ledger. Holding ``gate_state`` FOR UPDATE waits for every
    in-flight ledger write and blocks new ones; bumping the epoch makes any admission by the
    old gate that has not reached the ledger yet retry against the new one."""
    gate = deps.gate
    async with deps.sessions.begin() as session:
        old_epoch = await repo.epoch_exclusive(session)
        _, built_on = await repo.gate_instance(session)
        run_id = await gate.run_id()  # the Redis this gate is built on (gate.py, "Which Redis?")
        gate_epoch = await gate.epoch()
        want = _ledger_gate(
            await repo.all_products_meta(session),
            await repo.all_items_stock(session),
            await repo.held_units(session),
        )
        differences: list[dict[str, Any]] = []
        if gate_epoch is not None:
            differences = _diff(want, await gate.read(list(want)))
            if gate_epoch != old_epoch:
                differences.append({"kind": "epoch", "ledger": old_epoch, "gate": gate_epoch})
            if built_on != run_id:
                differences.append({"kind": "redis_run_id", "ledger": built_on, "gate": run_id})
            if only_if_different and not differences:
                return ReconcileReport(old_epoch, gate_epoch, True, False, [])
        await gate.close()
        applied = await repo.applied_reservations(session)
        new_epoch = old_epoch + 1
        await repo.set_epoch(session, new_epoch, run_id)
        await gate.write_all(want, applied, new_epoch)
    await gate.open(new_epoch)
    gate.trust(new_epoch, run_id)
    log.info(
        "stock gate rebuilt",
        extra={"epoch": new_epoch, "products": len(want), "differences": len(differences)},
    )
    return ReconcileReport(gate_epoch, new_epoch, gate_epoch is not None, True, differences)


async def reconcile(deps: Deps) -> ReconcileReport:
    return await rebuild_gate(deps, only_if_different=True)


# How far apart drift's two readings are: a difference seen in only one was an admission on its
# way to the ledger, not drift.
DRIFT_SECOND_LOOK_SECONDS = 0.25


async def drift(deps: Deps) -> GateDrift:
    """The gate against the ledger as :func:`reconcile` compares them, but read without its
    lock (nothing waits on this) and twice: a difference counts only if both readings show it
    with the same values, so a drop's flow of admissions is not mistaken for drift."""
    first = await _differences(deps)
    if first is None:
        return GateDrift(built=False, items=0, differences=0)
    await asyncio.sleep(DRIFT_SECOND_LOOK_SECONDS)
    second = await _differences(deps) or []
    seen = [repr(sorted(d.items())) for d in first]
    lasting = [d for d in second if repr(sorted(d.items())) in seen]
    items = {d["item_id"] for d in lasting if d.get("kind") == "available"}
    return GateDrift(built=True, items=len(items), differences=len(lasting))


async def _differences(deps: Deps) -> list[dict[str, Any]] | None:
    """What reconcile would call different now, or None when no gate is built."""
    gate = deps.gate
    gate_epoch = await gate.epoch()
    if gate_epoch is None:
        return None
    async with deps.sessions() as session:
        epoch, built_on = await repo.gate_instance(session)
        want = _ledger_gate(
            await repo.all_products_meta(session),
            await repo.all_items_stock(session),
            await repo.held_units(session),
        )
    differences = _diff(want, await gate.read(list(want)))
    if gate_epoch != epoch:
        differences.append({"kind": "epoch", "ledger": epoch, "gate": gate_epoch})
    if built_on != (run_id := await gate.run_id()):
        differences.append({"kind": "redis_run_id", "ledger": built_on, "gate": run_id})
    return differences
