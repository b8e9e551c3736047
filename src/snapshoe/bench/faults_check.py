"""The checker of a fault run (``bench drop --faults``, issue 18), once the run has settled:
every anomaly with its evidence, from the client's record, the databases, the PG and the
broker; and the per-fault rows of the result (recovery, the errors buyers saw)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

from snapshoe.bench import checks, settle_checks
from snapshoe.bench.drop_model import Drop
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.faults_env import FaultEnv
from snapshoe.bench.faults_nemesis import FaultRecord
from snapshoe.bench.faults_schedule import (
    answers_between,
    errors_of,
    is_anomalous,
    recovery,
    windows,
)
from snapshoe.bench.faults_workload import Record, pay, retrying


async def replay_unseen(
    bench: Bench, rec: Record, drop: Drop
) -> tuple[list[str], list[dict[str, Any]]]:
    """Orders in the database the buyers never saw a 201 for: each replayed with its key (an
    anomaly if it does not answer that order), then paid by its buyer, as a client that asks
    again would."""
    orders = await retrying(lambda: checks.product_orders(bench.settings, drop.product_id))
    unseen = sorted(set(orders.ids) - rec.client_ids)
    anomalies = await settle_checks.unseen_orders_replay(
        bench.settings, unseen, lambda b: bench.tokens[b]
    )
    failed = {a["evidence"]["order_id"] for a in anomalies}
    async with bench.client() as client:
        to_pay = []
        for oid in unseen:
            if oid not in failed and orders.ids[oid][1] == "PENDING_PAYMENT":
                rec.owner[oid] = orders.ids[oid][0]
                rec.client_ids.add(oid)
                to_pay.append(oid)
        await asyncio.gather(*(pay(bench, rec, client, o, False) for o in to_pay))
    return unseen, anomalies


def fault_rows(records: list[FaultRecord], rec: Record, run_end: float) -> list[dict[str, Any]]:
    faults = [r.fault for r in records]
    out = []
    for r, (start, until) in zip(records, windows(faults, run_end), strict=True):
        began = r.started if r.started is not None else start
        seconds, bad = recovery(rec.samples, began, until)
        seen = answers_between(rec.answers, began, until)
        out.append(
            {
                **r.as_dict(),
                "window": [round(began, 3), round(until, 3)],
                "recovery_seconds": seconds,
                "probe_rounds_not_normal": bad,
                "answers": seen,
                "errors_seen": errors_of(seen),
            }
        )
    return out


def throughput(answers: list[tuple[float, str]], bin_seconds: float = 1.0) -> dict[str, Any]:
    """Answers per bin: good (2xx, 4xx refusals) and errors (5xx, none)."""
    if not answers:
        return {}
    lo = math.floor(min(t for t, _ in answers) / bin_seconds)
    hi = math.floor(max(t for t, _ in answers) / bin_seconds)
    good = Counter[int]()
    bad = Counter[int]()
    for t, k in answers:
        b = math.floor(t / bin_seconds)
        (bad if (k.startswith("5") or k == "transport") else good)[b] += 1
    bins = range(lo, hi + 1)
    return {
        "bin_seconds": bin_seconds,
        "t": [b * bin_seconds for b in bins],
        "answered": [good[b] for b in bins],
        "errors": [bad[b] for b in bins],
    }


def anomaly(kind: str, evidence: Any) -> dict[str, Any]:
    return {"anomaly": kind, "evidence": evidence}


def gate_anomaly(diffs: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate differs from the ledger (products' reconcile has repaired it since). Said
    which way: fewer pairs on sale in the gate than in the ledger is an under-count (pairs
    off sale until a rebuild or reconcile: docs/products.md, "Unknown commit outcomes");
    more is an over-count, which could sell a pair twice."""
    avail = [d for d in diffs if d.get("kind") == "available"]
    over = any(int(d.get("gate") or 0) > int(d.get("ledger") or 0) for d in avail)
    under = any(int(d.get("gate") or 0) < int(d.get("ledger") or 0) for d in avail)
    way = "over-count" if over else "under-count" if under else "holds only"
    return anomaly(f"the Redis gate differs from the ledger ({way})", diffs)


def client_anomalies(
    env: FaultEnv, rec: Record, faults: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """From the run itself: a fault not applied, the platform gone, a client that never got a
    final answer, any 500."""
    out = [anomaly("a fault was not applied", f) for f in faults if not f["applied"]]
    if not env.platform_alive():
        out.append(anomaly("snapshoe up stopped", {"exit": env.up.poll() if env.up else None}))
    if rec.gave_up:
        out.append(anomaly("a client never got a final answer", rec.gave_up[:20]))
    server_errors = {k: n for k, n in Counter(k for _, k in rec.answers).items() if is_anomalous(k)}
    if server_errors:
        when = sorted({round(t, 1) for t, k in rec.answers if is_anomalous(k)})[:50]
        evidence = {"counts": server_errors, "at": when}
        out.append(anomaly("500 answers (a server error, not an outage)", evidence))
    return out


def stock_anomalies(product: checks.ProductCheck) -> list[dict[str, Any]]:
    """``checks.check_product``'s findings, each with its evidence."""
    out = []
    if product.oversold:
        out.append(anomaly("pairs oversold", product.as_dict()["items"]))
    if product.limit_violations:
        out.append(anomaly("buyers over the per-buyer limit", product.limit_violations))
    if not product.ledger_invariant:
        why = "ledger invariant broken (initial != sold + reserved + available)"
        out.append(anomaly(why, product.items))
    if not product.ledger_matches_reservations:
        out.append(anomaly("ledger does not match its reservations", product.items))
    if product.gate_differences:
        out.append(gate_anomaly(product.gate_differences))
    if product.client_only_ids:
        out.append(anomaly("201s with no order in the database", product.client_only_ids[:20]))
    if product.db_only_ids:
        out.append(anomaly("orders nobody was ever answered for", product.db_only_ids[:20]))
    if product.orders_paid != product.pairs_sold:
        sold = {"orders_paid": product.orders_paid, "pairs_sold": product.pairs_sold}
        out.append(anomaly("paid orders differ from pairs sold", sold))
    return out


async def messaging_anomalies(bench: Bench, figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Consumer queues drained, DLQs empty, the outbox drained (60 s each at most)."""
    out = []
    messaging = await settle_checks.messaging_settled(bench.settings, 60)
    figures["messaging"] = messaging
    if messaging["undrained_queues"]:
        out.append(anomaly("consumer queues not drained", messaging["undrained_queues"]))
    if messaging["dead_letters"]:
        out.append(anomaly("dead letters", messaging["dead_letters"]))
    outbox = await checks.wait_outbox_drained(bench.settings, 60)
    figures["outbox_unpublished"] = outbox
    if any(outbox.values()):
        out.append(anomaly("outbox not drained", outbox))
    return out


async def check(
    bench: Bench,
    env: FaultEnv,
    rec: Record,
    drop: Drop,
    faults: list[dict[str, Any]],
    settle_seconds: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The checker once the run has settled: every anomaly with its evidence, and figures."""
    settings = bench.settings
    out = client_anomalies(env, rec, faults)
    figures: dict[str, Any] = {}
    bench.ensure_fresh_tokens(300)  # the replays and payments below act as the buyers
    unseen, replay = await replay_unseen(bench, rec, drop)
    figures["unseen_orders"] = len(unseen)
    out += replay
    settled = await _wait_settled(bench, drop, settle_seconds)
    figures["settled"] = settled
    if not settled:
        out.append(anomaly("orders did not settle their stock", await _settle_state(bench, drop)))
    diffs = await checks.gate_differences(settings, [drop.product_id])
    product = await checks.check_product(
        settings,
        drop.product_id,
        stock_mode="gate",
        limit=bench.cfg.per_user_limit,
        client_ids=rec.client_ids,
        gate_diffs=diffs,
    )
    figures["product"] = product.as_dict()
    out += stock_anomalies(product)
    money = await settle_checks.order_money(settings, drop.product_id)
    figures["orders_by_status"] = dict(Counter(o.status for o in money))
    figures["approved_charges"] = sum(o.charges for o in money)
    figures["refunds"] = sum(o.refunds for o in money)
    out += settle_checks.money_anomalies(money)
    out += await messaging_anomalies(bench, figures)
    return out, figures


async def _settle_state(bench: Bench, drop: Drop) -> dict[str, Any]:
    orders = await checks.product_orders(bench.settings, drop.product_id)
    items = await checks.ledger(bench.settings, drop.product_id)
    items[0].pop("_held", None) if items else None
    return {
        "orders_by_status": dict(Counter(s for _, s, _ in orders.ids.values())),
        "items": [{k: i[k] for k in ("size", "sold", "reserved", "available")} for i in items],
    }


async def _wait_settled(bench: Bench, drop: Drop, within: float) -> bool:
    from snapshoe.bench.drop_payments import wait_settled

    return await retrying(lambda: wait_settled(bench, drop, within), within=within + 30)
