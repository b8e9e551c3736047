"""The workload and the client's record of a fault run (``bench drop --faults``, issue 18):
the wrk stampede with its winners paying, late buyers who keep pressing "buy" all through the
faults, and a probe of the product page and every service's ``/readyz``. Every client asks
again, with the same Idempotency-Key, an answer that is not final (no answer, a 5xx,
``idempotency_key_in_use``), as a real one would; every answer is recorded with its time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from snapshoe.bench import checks
from snapshoe.bench.drop_model import APPROVE_CARD, DECLINE_CARD, Drop, Stampede
from snapshoe.bench.drop_result import timeline
from snapshoe.bench.drop_setup import Bench
from snapshoe.bench.drop_stampede import stampede
from snapshoe.bench.faults_schedule import Sample
from snapshoe.bench.http import HTTP_ERRORS, Client, Response
from snapshoe.kernel.settings import Settings

T = TypeVar("T")
PROBE_INTERVAL = 0.15
PROBE_TIMEOUT = 2.0
RETRY_SECONDS = 0.3
FINAL_WITHIN = 120.0  # a client gives up asking again after this
HEALTHY_FOR = 2.0
# After the last fault, late buyers keep coming this long while pairs are on sale (declined
# ones put back): the drop sells out if buyers are left.
SELL_OUT_EXTRA = 30.0  # after the last fault: normal answers this long before the checks


@dataclass
class Record:
    """The client's record: every answer a buyer got (seconds after the release, kind), the
    orders it saw a 201 for, and the probe rounds."""

    release_ts: float = 0.0
    answers: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    bad_probes: list[dict[str, Any]] = field(default_factory=list)
    client_ids: set[str] = field(default_factory=set)
    owner: dict[str, str] = field(default_factory=dict)  # order id -> buyer
    paid: Counter[str] = field(default_factory=Counter)
    placed: Counter[str] = field(default_factory=Counter)
    gave_up: list[dict[str, Any]] = field(default_factory=list)
    pairs_left: int | None = None  # the product page's, as the probe last saw it

    def now(self) -> float:
        return round(time.time() - self.release_ts, 3)

    def note(self, kind: str) -> None:
        self.answers.append((self.now(), kind))


def kind_of(r: Response | None) -> str:
    """An answer as the record counts it: ``201``, ``409:sold_out``, ``503+retry-after``,
    ``502``, or ``transport`` (no answer)."""
    if r is None:
        return "transport"
    code = ""
    if r.status >= 400:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            code = str(r.json().get("code") or "")
    kind = f"{r.status}:{code}" if code else str(r.status)
    if r.status == 503 and "Retry-After" in r.headers:
        kind += "+retry-after"
    return kind


def not_final(r: Response | None) -> bool:
    """Ask again with the same key: no answer, a 5xx, or the first attempt still running."""
    return r is None or r.status >= 500 or kind_of(r).startswith("409:idempotency_key_in_use")


async def until_final(
    rec: Record, send: Callable[[], Awaitable[Response]], what: str
) -> Response | None:
    deadline = time.monotonic() + FINAL_WITHIN
    while True:
        r: Response | None
        try:
            r = await send()
        except HTTP_ERRORS:
            r = None
        rec.note(kind_of(r))
        if not not_final(r):
            return r
        if time.monotonic() > deadline:
            rec.gave_up.append({"what": what, "last": kind_of(r)})
            return r
        await asyncio.sleep(RETRY_SECONDS)


async def retrying(fn: Callable[[], Awaitable[T]], within: float = 120) -> T:
    """A read of the databases or the broker by the bench itself, through an outage."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# The buyers


async def pay(bench: Bench, rec: Record, client: Client, order_id: str, decline: bool) -> None:
    """A buyer pays: authorizes at the PG's window, then confirms, each asked again until
    final (the same payment key and Idempotency-Key every time)."""
    buyer = rec.owner[order_id]
    card = DECLINE_CARD if decline else APPROVE_CARD
    price = bench.cfg.price
    auth = await until_final(
        rec,
        lambda: client.post(
            "/pg/v1/sandbox/authorizations",
            json={"order_id": order_id, "amount": price, "card_number": card},
        ),
        f"authorize {order_id}",
    )
    if auth is None or auth.status != 200:
        rec.paid[f"authorize:{kind_of(auth)}"] += 1
        return
    payment_key = auth.json()["payment_key"]
    confirm = await until_final(
        rec,
        lambda: client.post(
            "/api/payments/confirm",
            json={"order_id": order_id, "payment_key": payment_key, "amount": price},
            headers={
                "Authorization": f"Bearer {bench.tokens[buyer]}",
                "Idempotency-Key": f"bp-{bench.run_id}-{order_id}",
            },
        ),
        f"confirm {order_id}",
    )
    rec.paid[kind_of(confirm)] += 1


async def place(bench: Bench, rec: Record, client: Client, buyer: str, item_id: str) -> str | None:
    """One order attempt, asked again with its key until final; the order id on a 201."""
    key = f"bf-{bench.run_id}-{buyer}"
    r = await until_final(
        rec,
        lambda: client.post(
            "/api/orders",
            json={"lines": [{"item_id": item_id, "quantity": 1}]},
            headers={"Authorization": f"Bearer {bench.tokens[buyer]}", "Idempotency-Key": key},
        ),
        f"order {key}",
    )
    rec.placed[kind_of(r)] += 1
    if r is not None and r.status == 201:
        oid = str(r.json()["id"])
        rec.client_ids.add(oid)
        rec.owner[oid] = buyer
        return oid
    return None


async def trickle(
    bench: Bench,
    rec: Record,
    client: Client,
    drop: Drop,
    pool: list[str],
    until: float,
    rate: float,
    payers_done: asyncio.Event,
) -> None:
    """Late buyers from the release on, ``rate`` attempts a second until ``until`` (seconds
    after the release), then on while pairs may come back on sale (the stampede's winners
    still paying, or pairs on the product page), ``SELL_OUT_EXTRA`` at most: each orders a
    random size; a winner pays (a share declines)."""
    items = [i["id"] for i in drop.items]
    tasks: list[asyncio.Task[None]] = []

    async def one(buyer: str) -> None:
        oid = await place(bench, rec, client, buyer, bench.rng.choice(items))
        if oid is not None:
            await pay(bench, rec, client, oid, bench.rng.random() < bench.cfg.decline_share)

    def going() -> bool:
        if rec.now() < until:
            return True
        may_come_back = not payers_done.is_set() or (rec.pairs_left or 0) > 0
        return rec.now() < until + SELL_OUT_EXTRA and may_come_back

    await asyncio.sleep(max(0.0, -rec.now()))
    t0 = time.monotonic()
    while pool and going():
        tasks.append(asyncio.create_task(one(pool.pop())))
        await asyncio.sleep(max(0.0, len(tasks) / rate - (time.monotonic() - t0)))
    await asyncio.gather(*tasks)


async def probe(settings: Settings, drop: Drop, rec: Record, stop: asyncio.Event) -> None:
    """Every ``PROBE_INTERVAL``: the product page through the gateway and each service's
    /readyz; a round is good when all answer 200 within ``PROBE_TIMEOUT``."""
    targets = {"product": f"{settings.gateway_url}/api/products/{drop.product_id}"} | {
        s: f"{settings.service_url(s)}/readyz" for s in ("users", "products", "orders", "payments")
    }
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)

    async def status(c: Client, url: str) -> int:
        try:
            r = await c.get(url, timeout=timeout)
        except HTTP_ERRORS:
            return 0
        if url == targets["product"] and r.status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec.pairs_left = sum(int(i["stock_remaining"]) for i in r.json()["items"])
        return r.status

    async with Client(timeout=PROBE_TIMEOUT, max_connections=16) as c:
        while not stop.is_set():
            t = rec.now()
            codes = await asyncio.gather(*(status(c, u) for u in targets.values()))
            ok = all(code == 200 for code in codes)
            rec.samples.append(Sample(t, ok))
            if not ok:
                rec.bad_probes.append(
                    {"t": t, **{k: v for k, v in zip(targets, codes, strict=True) if v != 200}}
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, PROBE_INTERVAL - (rec.now() - t)))


async def healthy_for(rec: Record, seconds: float, within: float) -> bool:
    """Wait until the probes have been good for ``seconds`` in a row (or ``within`` passed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        recent = [s for s in rec.samples if s.t >= rec.now() - seconds]
        if len(recent) >= 3 and all(s.ok for s in recent) and rec.samples[-1].ok:
            return True
        await asyncio.sleep(0.2)
    return False


# The run


async def winners_of(bench: Bench, rec: Record, drop: Drop, main: Stampede) -> list[str]:
    """The stampede's 201s as orders with their buyers (from the orders database)."""
    orders = await retrying(lambda: checks.product_orders(bench.settings, drop.product_id))
    won = []
    for oid in main.ok:
        rec.client_ids.add(oid)
        if oid in orders.ids:
            rec.owner[oid] = orders.ids[oid][0]
            won.append(oid)
    return won


async def workload(
    bench: Bench,
    rec: Record,
    drop: Drop,
    tokens: Path,
    pool: list[str],
    until: float,
    rate: float,
) -> Stampede:
    """The stampede, its winners paying; late buyers from the release on, alongside."""
    cfg = bench.cfg
    async with bench.client() as client:
        payers_done = asyncio.Event()
        late = asyncio.create_task(
            trickle(bench, rec, client, drop, pool, until, rate, payers_done)
        )
        try:
            main = await stampede(bench, drop, "gate", tokens, cfg.max_seconds)
            bench.log(
                f"stampede done: {main.attempts} attempts in {main.seconds:.2f}s, {main.counts}"
            )
            won = await winners_of(bench, rec, drop, main)
            n_decline = round(len(won) * cfg.decline_share)
            decline = set(bench.rng.sample(won, n_decline))
            await asyncio.gather(*(pay(bench, rec, client, o, o in decline) for o in won))
            payers_done.set()
            await late
        finally:
            late.cancel()
            with contextlib.suppress(BaseException):
                await late
    return main


def stampede_answers(main: Stampede, release_ts: float) -> list[tuple[float, str]]:
    """wrk's answers by time bin (drop.lua's timeline), as (bin middle, kind) entries."""
    tl = timeline(main.summary)
    out = []
    for kind, counts in (tl.get("answers") or {}).items():
        for t, n in zip(tl["t"], counts, strict=True):
            out += [(float(t) + tl["bin_seconds"] / 2, kind)] * int(n)
    return out
