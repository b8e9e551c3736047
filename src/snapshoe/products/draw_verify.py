"""``snapshoe draws verify PRODUCT_ID``: recompute a draw from what it published, as anyone
outside could (only the public ``GET /api/products/{id}/draw`` through the gateway, and the
ranking of draw_ranking.py, which docs/draws.md spells out)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from snapshoe.kernel.clients import pooled_session
from snapshoe.kernel.draw_ranking import Verdict, verify

TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=30)


async def fetch(base_url: str, pid: str) -> dict[str, Any]:
    """The published draw; ``aiohttp.ClientResponseError`` on an error status."""
    url = URL(f"{base_url.rstrip('/')}/api/products/{quote(pid, safe='')}/draw", encoded=True)
    async with (
        pooled_session(1, timeout=TIMEOUT) as client,
        client.get(url, raise_for_status=True) as r,
    ):
        body: dict[str, Any] = await r.json(content_type=None)
    return body


def check(published: dict[str, Any]) -> Verdict:
    out = verify(
        commitment=str(published["commitment"]),
        seed=published.get("seed"),
        entries=published["entries"],
        pairs={str(i["item_id"]): int(i["pairs"]) for i in published["items"]},
    )
    if published.get("state") != "settled":
        out.problems.append(f"the draw is {published.get('state')}, not settled yet")
    return out


def report(pid: str, published: dict[str, Any], verdict: Verdict) -> str:
    lines = [
        f"draw of {pid}: {verdict.checked_entries} entries, {verdict.winners} winners",
        f"commitment {published['commitment']}",
        f"seed       {published.get('seed')}",
    ]
    lines += [f"PROBLEM: {p}" for p in verdict.problems[:50]]
    if len(verdict.problems) > 50:
        lines.append(f"... and {len(verdict.problems) - 50} more")
    lines.append(
        "OK: the seed matches the commitment and the winners are the ones ranked first"
        if verdict.ok
        else "NOT OK"
    )
    return "\n".join(lines)
