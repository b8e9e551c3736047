"""Measure the reserve endpoint alone: reservations admitted per second and sold-out
refusals per second, with wrk (``reserve.lua`` next to it makes every request a new
reservation id and a new buyer) against a running products service.

    uv run python -m snapshoe.bench.reserve [--url http://127.0.0.1:8102] [--duration 15]
        [--connections 64] [--threads 2]

Settings (namespace, DB, Redis, keys) come from the SNAPSHOE_ environment, as for the service.
It creates one product with two items: one with plenty of stock (every request admitted and
written to the ledger) and one with none (every request refused by the gate). Afterwards it
checks that the ledger took exactly what wrk saw admitted and that the gate agrees with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from snapshoe.bench.http import Client
from snapshoe.bench.wrk import script_path, wrk_binary
from snapshoe.kernel.auth import build_issuer
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.settings import Settings


def wrk(url: str, items: str, args: argparse.Namespace, token: str) -> dict[str, float]:
    out = subprocess.run(  # noqa: S603 (our own fixed argv)
        [
            wrk_binary(),
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(script_path("reserve.lua")),
            url,
        ],
        env={**os.environ, "ITEMS": items, "TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = {}
    for name in ("ADMITTED", "REFUSED"):
        m = re.search(rf"^{name} (\d+) ([\d.]+)/s", out, re.M)
        assert m, out
        result[name.lower()] = int(m.group(1))
        result[f"{name.lower()}_per_s"] = float(m.group(2))
    m = re.search(r"^OTHER (\d+)", out, re.M)
    result["other"] = int(m.group(1)) if m else -1
    m = re.search(r"p50=([\d.]+)ms p99=([\d.]+)ms", out)
    if m:
        result["p50_ms"], result["p99_ms"] = float(m.group(1)), float(m.group(2))
    return result


async def measure(
    settings: Settings, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, float], int, dict[str, Any]]:
    """A product with an item of ``args.stock`` units and one of none; wrk on each; returns
    wrk's figures for both, the units the ledger took and the gate's reconcile report."""
    token, _ = build_issuer(settings).issue_access("bench", email_verified=True, roles=["admin"])
    admin = {"Authorization": f"Bearer {token}"}
    internal = internal_headers(settings)
    async with Client(args.url, timeout=30) as http:
        r = await http.post(
            "/api/admin/products",
            headers=admin,
            json={
                "name": f"Bench {secrets.token_hex(3)}",
                "brand": "Bench",
                "price": 100_000,
                "release_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
                "per_user_limit": 0,
            },
        )
        r.raise_for_status()
        pid = r.json()["id"]
        plenty = (
            await http.post(
                f"/api/admin/products/{pid}/items",
                headers=admin,
                json={"size": 270, "color": "Bench", "stock": args.stock},
            )
        ).json()["id"]
        none = (
            await http.post(
                f"/api/admin/products/{pid}/items",
                headers=admin,
                json={"size": 275, "color": "Bench", "stock": 0},
            )
        ).json()["id"]

        secret = internal["X-Internal-Token"]
        # wrk runs for --duration seconds: in a thread, so it does not block the loop.
        admitted = await asyncio.to_thread(wrk, args.url, plenty, args, secret)
        refused = await asyncio.to_thread(wrk, args.url, none, args, secret)

        details = (
            await http.get("/internal/items", params={"ids": plenty}, headers=internal)
        ).json()
        left = int(details["items"][0]["stock_remaining"])
        report = (await http.post("/internal/gate/reconcile", headers=internal)).json()

    return admitted, refused, args.stock - left, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    settings = Settings()
    parser.add_argument("--url", default=settings.service_url("products"))
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stock", type=int, default=1_000_000)
    args = parser.parse_args()

    admitted, refused, taken, report = asyncio.run(measure(settings, args))
    # wrk stops with up to one request per connection in flight: those were admitted by the
    # service but not counted by wrk.
    in_flight = taken - int(admitted["admitted"])
    ok = 0 <= in_flight <= args.connections and not report["differences"]
    print(f"machine: {platform.node()} {os.cpu_count()} cpu(s), {platform.platform()}")
    print(f"wrk: {args.threads} threads, {args.connections} connections, {args.duration}s each")
    print(
        f"admitted:  {admitted['admitted_per_s']:8.1f}/s  ({int(admitted['admitted'])} "
        f"reservations, p50 {admitted.get('p50_ms')} ms, p99 {admitted.get('p99_ms')} ms, "
        f"non-201: {int(admitted['refused'] + admitted['other'])})"
    )
    print(
        f"sold out:  {refused['refused_per_s']:8.1f}/s  ({int(refused['refused'])} refusals, "
        f"p50 {refused.get('p50_ms')} ms, p99 {refused.get('p99_ms')} ms, "
        f"non-409: {int(refused['admitted'] + refused['other'])})"
    )
    print(
        f"ledger check: ledger took {taken} = {int(admitted['admitted'])} counted by wrk + "
        f"{in_flight} in flight at the stop; "
        f"gate vs ledger differences: {len(report['differences'])} -> {'OK' if ok else 'FAIL'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
