"""``bench queue``'s verdict: the checks that fail a run (any broken one does, at any size), the
issue's targets (reported, meaningful at full size), and the HTML report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from snapshoe.bench.report_kinds import queue_page

MAX_MET_SOLD_OUT_SHARE = 0.01


def failures(r: dict[str, Any]) -> list[str]:
    c, q, seen = r["check"], r["queue"], r["seen"]
    out = []
    for name in ("oversold", "limit_violations"):
        if c[name]:
            out.append(f"{name}: {c[name]}")
    if not c["ledger_consistent"]:
        out.append("ledger inconsistent (invariant, reservations or gate)")
    if c["client_only_ids"]["count"] or c["db_only_ids"]["count"]:
        out.append("the 201s buyers saw and the orders in the database differ")
    if c["pairs_sold"] != c["pairs"]:
        out.append(f"{c['pairs_sold']} of {c['pairs']} pairs sold")
    server_errors = {k: n for k, n in seen.get("statuses", {}).items() if k.split()[-1][0] == "5"}
    if server_errors:
        out.append(f"5xx answers: {server_errors}")
    if seen.get("errors"):
        out.append(f"client errors (refused joins, broken streams, timeouts): {seen['errors']}")
    if seen.get("unfinished") or seen.get("crashed_count"):
        out.append(f"unfinished buyers {seen.get('unfinished')}, crashed {seen.get('crashed')}")
    for state in ("waiting", "admitted"):
        if q["states"].get(state):
            out.append(f"{q['states'][state]} tickets still {state}")
    if q["admitted_twice"] or r["orders_without_admission"]:
        out.append("an order without an admission, or one admission used twice")
    if not q["late_in_arrival_order"]:
        out.append("tickets taken after the release are not in arrival order")
    out += fairness_failure(q)
    if r["admitted_met_sold_out_share"] > MAX_MET_SOLD_OUT_SHARE:
        out.append(f"admitted buyers who met sold_out: {r['admitted_met_sold_out_share']:.2%}")
    return out


def fairness_failure(q: dict[str, Any]) -> list[str]:
    """|rho| beyond 4 standard errors (1/sqrt(n-1) under independence): at any size a fair
    shuffle fails this about once in 16,000 runs; at 20,000 tickets the bound is 0.028."""
    rho, n = q["spearman_join_vs_place"], q["early_tickets"]
    if rho is None or n < 3:
        return ["too few pre-queue tickets for the fairness figure"]
    bound = 4 / math.sqrt(n - 1)
    return (
        [f"join order predicts place: rho {rho:.4f}, bound {bound:.4f}"] if abs(rho) > bound else []
    )


def targets(r: dict[str, Any]) -> dict[str, Any]:
    cmp = r.get("compare", {})
    queue_s = r["sales"]["seconds_to_every_pair_taken"]
    fcfs_s = cmp.get("fcfs", {}).get("seconds_to_every_pair_taken")
    return {
        "rho_below_0.05": r["queue"]["spearman_join_vs_place"] is not None
        and abs(r["queue"]["spearman_join_vs_place"]) < 0.05,
        "streams_held_20000": r["streams_held_at_once"] >= 20_000,
        "stream_delay_p99_le_1s": (r["stream_delay_p99_ms"] or math.inf) <= 1000,
        "every_fate_within_5s_of_last_sale": (
            r["last_fate_seen_after_last_payment_s"] is not None
            and r["last_fate_seen_after_last_payment_s"] <= 5
        ),
        "sells_out_no_slower_than_fcfs": (
            None if fcfs_s is None or queue_s is None else queue_s <= fcfs_s
        ),
    }


def evaluate(r: dict[str, Any]) -> None:
    r["failures"] = failures(r)
    r["targets"] = targets(r)
    r["ok"] = not r["failures"]


def write_html(r: dict[str, Any], path: Path) -> Path:
    """The report page (report_kinds.queue_page)."""
    path.write_text(queue_page(r))
    return path
