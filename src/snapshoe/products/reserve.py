"""The reserve path: the Redis gate first (one Lua call; refusals end there), then the
admitted reservation to the ledger (ledger.py). The ledger is the truth; the gate is rebuilt
from it whenever its keys are missing or wrong (rebuild.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import Counter
from redis.exceptions import RedisError

from snapshoe.kernel.batching import OutcomeUnknown
from snapshoe.kernel.clock import epoch_ms, utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.baseline import reserve_db_lock
from snapshoe.products.deps import Admitted, Deps
from snapshoe.products.domain import Line, ProductLines, group_by_product, merge_lines
from snapshoe.products.draw_claims import check_claim, drawn_products
from snapshoe.products.gate import Verdict
from snapshoe.products.ledger import StaleEpoch, answer_existing, write_reservation
from snapshoe.products.problems import gate_unavailable, limit_exceeded, outcome_unknown
from snapshoe.products.queue_claims import (
    admission_required,
    give_back,
    queued_products,
    use_admission,
)
from snapshoe.products.rebuild import ensure_gate, register_products, verify_gate
from snapshoe.products.reservations import modes_of

log = logging.getLogger("snapshoe.products")

RESERVATIONS = Counter(
    "snapshoe_reservations_total",
    "Reservation attempts: admitted, refused (4xx, by problem code) or failed (5xx, by code)",
    ["outcome", "reason"],
)

RESERVE_ATTEMPTS = 8
# A retry the gate recognises waits this long for its first attempt's ledger write.
REPLAY_WAIT_SECONDS = 3.0
REPLAY_POLL_SECONDS = 0.02


async def _products_of(deps: Deps, item_ids: Sequence[str]) -> dict[str, str]:
    missing = [i for i in item_ids if i not in deps.item_products]
    if missing:
        async with deps.sessions() as session:
            for r in await repo.item_details(session, missing):
                deps.item_products[r["id"]] = r["product_id"]
                deps.product_modes[r["product_id"]] = r["stock_mode"]
    unknown = [i for i in item_ids if i not in deps.item_products]
    if unknown:
        raise Problem(404, "not_found", detail="Unknown item", item_ids=unknown)
    return {i: deps.item_products[i] for i in item_ids}


async def reserve(deps: Deps, body: schemas.ReserveIn) -> schemas.ReservationOut:
    """Reserve (one counter increment: the figures operators ask about in a drop)."""
    try:
        out = await _reserve(deps, body)
    except Problem as problem:
        outcome = "refused" if problem.status < 500 else "failed"
        RESERVATIONS.labels(outcome, problem.code).inc()
        raise
    RESERVATIONS.labels("admitted", "").inc()
    return out


async def _reserve(deps: Deps, body: schemas.ReserveIn) -> schemas.ReservationOut:
    lines = merge_lines(Line(x.item_id, x.quantity) for x in body.lines)
    product_of = await _products_of(deps, [x.item_id for x in lines])
    groups = group_by_product(lines, product_of)
    pids = [g.product_id for g in groups]
    # A draw's pairs go to its drawn entrants only (draw_claims.py).
    if await drawn_products(deps, pids):
        await check_claim(deps, body, lines)
        return await _in_stock_mode(deps, body, lines, groups)
    # The waiting room comes before either stock mode: no way to stock skips the admission.
    queued = await queued_products(deps, pids)
    if not queued:
        return await _in_stock_mode(deps, body, lines, groups)
    if len(queued) > 1:
        raise admission_required("One order holds one waiting room's admission")
    ticket = await use_admission(deps, body, queued[0])
    try:
        return await _in_stock_mode(deps, body, lines, groups)
    except Problem as refusal:
        # Nothing reached the ledger (a refusal, or the gate unreachable): the admission is
        # the buyer's again. Not when the ledger write's outcome is unknown: it may be used.
        if refusal.code != "outcome_unknown":
            await give_back(deps, queued[0], ticket, body.reservation_id)
        raise


async def _in_stock_mode(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line], groups: list[ProductLines]
) -> schemas.ReservationOut:
    modes = await modes_of(deps, [g.product_id for g in groups])
    if "db_lock" in modes.values():
        if set(modes.values()) != {"db_lock"}:
            raise Problem(
                422,
                "mixed_stock_modes",
                detail="A reservation cannot mix db_lock and gate products",
            )
        return await reserve_db_lock(deps, body, lines)
    return await _through_gate(deps, body, lines, groups)


async def _through_gate(
    deps: Deps, body: schemas.ReserveIn, lines: list[Line], groups: list[ProductLines]
) -> schemas.ReservationOut:
    rid, buyer = body.reservation_id, body.buyer_id
    gate = deps.gate
    try:
        if gate.expected_epoch is None:
            await verify_gate(deps)  # once per process: learn what the gate was built on
        for _ in range(RESERVE_ATTEMPTS):
            verdict = await gate.reserve(rid, buyer, groups, epoch_ms(utcnow()))
            # A connection just met another Redis: no answer of it counts until verified
            # (an attribute read on the hot path; the check ran when the connection opened).
            if gate.suspect and await verify_gate(deps):
                continue
            if verdict.outcome == "closed":
                await ensure_gate(deps)
            elif verdict.outcome == "stale":
                await verify_gate(deps)
            elif verdict.outcome in ("unknown_product", "unknown_item"):
                await register_products(deps, [g.product_id for g in groups])
            elif verdict.outcome in ("not_open", "sold_out", "limit"):
                raise _refusal(verdict)
            else:
                try:
                    if verdict.outcome == "ok":
                        # Group commit: written with whatever else the gate admitted meanwhile.
                        return await deps.ledger.submit(
                            Admitted(body, lines, groups, verdict.epoch)
                        )
                    return await _replayed(deps, body, lines, groups, verdict.epoch)
                except StaleEpoch:
                    continue  # admitted by a gate that no longer exists: ask the new one
                except OutcomeUnknown as exc:
                    # The reservation may be in the ledger: the gate keeps the admission
                    # (nothing given back); a retry of this id finds it (replay) or writes it.
                    raise outcome_unknown() from exc
    except RedisError as exc:
        log.warning("stock gate unreachable: %s", exc)
        raise gate_unavailable() from exc
    raise gate_unavailable()


def _refusal(verdict: Verdict) -> Problem:
    """The gate's refusal, as the API says it."""
    if verdict.outcome == "not_open":
        return Problem(
            409,
            "drop_not_open",
            detail="The drop has not started",
            product_id=verdict.product_id,
        )
    if verdict.outcome == "sold_out":
        return Problem(409, "sold_out", detail="Not enough stock", item_ids=list(verdict.item_ids))
    return limit_exceeded(verdict.product_id)


async def _replayed(
    deps: Deps,
    body: schemas.ReserveIn,
    lines: list[Line],
    groups: list[ProductLines],
    epoch: int,
) -> schemas.ReservationOut:
    """The gate already admitted this id (a retry racing its first attempt): that attempt's
    write is in flight, usually queued in a ledger batch. Wait for it rather than race it: had
    this request written first, that one would find a duplicate and give its units back to the
    gate, which would then count units the ledger has sold. Only if nothing has reached the
    ledger after REPLAY_WAIT_SECONDS (the first attempt's process died, or the ledger refused
    it) does this one try the write itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT_SECONDS
    while True:
        async with deps.sessions() as session:
            found = await repo.get_reservation(session, body.reservation_id, tombstone=True)
        if found is not None:
            return answer_existing(found, body, lines)
        if loop.time() > deadline:
            return await write_reservation(deps, body, lines, groups, epoch, fresh=False)
        await asyncio.sleep(REPLAY_POLL_SECONDS)
