"""The buyers of ``bench queue``, run in worker processes: each process takes a slice of the
buyers with its own event loop and aiohttp session, so that 20,000 buyers' streams and requests
are not one Python thread's work (the first, one-process version fell behind beyond a few
hundred buyers). aiohttp rather than httpx: it holds thousands of streaming responses at a
fraction of httpx's CPU per connection, and it is already the platform's own HTTP client.

A buyer joins at its time, then follows the ticket on its event stream (or polls it, or polls
after a refused stream); once admitted it orders a size still on sale with its admission and
pays through the sandbox PG, a share of them with a declining card. The slice returns a plain
dict (pickled back to the parent) of what its buyers saw.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from snapshoe.bench.drop_model import APPROVE_CARD, DECLINE_CARD

FINAL = frozenset({"used", "expired", "sold_out"})
PAY_ATTEMPTS = 4
PAY_RETRY_SECONDS = 2.0
# Set in each worker by init_worker: this process's open streams, which the parent sums across
# processes while they run (the streams held at once, not the sum of each process's maximum).
OPEN_STREAMS: Any = None
MAX_ORDER_ATTEMPTS = 50  # more than any bench's sizes: every size may be tried once
PAGE_SECONDS = 1.0  # how old a product page may be (products' read cache)
RETRIES = 3  # a request that failed to connect or timed out
DEFAULT_RETRY_MS = 3000  # EventSource's reconnection time until the server sends its own
STREAM_ATTEMPTS = 3  # streams in a row that told nothing before a buyer polls instead


@dataclass(frozen=True)
class Buyer:
    id: str
    token: str
    join_at: float  # wall clock (time.time()), shared by every process
    stream: bool


@dataclass(frozen=True)
class Slice:
    gateway_url: str
    pid: str
    run_id: str
    price: int
    buyers: tuple[Buyer, ...]
    poll_seconds: float
    decline_share: float
    deadline: float  # wall clock: whatever is not final by then is unfinished
    seed: int
    index: int = 0  # this slice's slot in OPEN_STREAMS
    source_ip: str | None = None  # spreads client ports over loopback addresses


@dataclass
class Seen:
    """What one slice's buyers saw; ``as_dict`` is what goes back to the parent."""

    joins_ms: list[float] = field(default_factory=list)
    stream_delays_ms: list[float] = field(default_factory=list)  # admitted_at -> frame
    # (ticket id, state, wall clock, seen on the stream) for every fate a buyer learnt
    final_arrivals: list[tuple[str, str, float, bool]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    admitted: int = 0
    met_sold_out: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    paid: Counter[str] = field(default_factory=Counter)
    fates: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # "label status"
    errors: Counter[str] = field(default_factory=Counter)
    open_streams: int = 0
    max_streams: int = 0
    unfinished: int = 0
    ended: Counter[str] = field(default_factory=Counter)  # why the slice stopped (one)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in vars(self).items()}


class Shopper:
    """One slice's session and record; its methods are the buyers' steps."""

    def __init__(self, s: Slice, session: aiohttp.ClientSession) -> None:
        self.s = s
        self.session = session
        self.seen = Seen()
        self.rng = random.Random(s.seed)  # noqa: S311  (declines and sizes, not secrets)
        self.bought: set[str] = set()

    async def call(
        self, method: str, path: str, label: str, buyer: Buyer | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if buyer is not None:
            headers["Authorization"] = f"Bearer {buyer.token}"
        for attempt in range(RETRIES):
            try:
                async with self.session.request(method, path, headers=headers, **kw) as r:
                    body = await r.read()
                    self.seen.statuses[f"{label} {r.status}"] += 1
                    return r.status, orjson.loads(body) if body else None
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                self.seen.errors[f"{label} {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5 * (attempt + 1))
        return 0, None

    async def life(self, b: Buyer) -> None:
        await asyncio.sleep(max(0.0, b.join_at - time.time()))
        started = time.monotonic()
        status, ticket = await self.call("POST", f"/api/products/{self.s.pid}/queue", "join", b)
        self.seen.joins_ms.append((time.monotonic() - started) * 1000)
        if status not in (200, 201):
            self.seen.errors[f"join {status}:{(ticket or {}).get('code')}"] += 1
            return
        if await self.on_ticket(b, ticket, via_stream=False):
            return
        if not (b.stream and await self.follow_stream(b)):
            await self.follow_poll(b)

    async def on_ticket(self, b: Buyer, ticket: dict[str, Any], *, via_stream: bool) -> bool:
        """React to a ticket seen; True once it is final."""
        state = ticket["state"]
        if state == "admitted" and b.id not in self.bought:
            self.bought.add(b.id)
            self.seen.admitted += 1
            if via_stream:
                at = _epoch(ticket["admitted_at"])
                self.seen.stream_delays_ms.append((time.time() - at) * 1000)
            await self.buy(b, ticket["admission_token"])
        if state in FINAL:
            self.seen.fates[state] += 1
            self.seen.final_arrivals.append((ticket["id"], state, time.time(), via_stream))
            return True
        return False

    async def follow_stream(self, b: Buyer) -> bool:
        """The ticket's event stream until it is final, as a browser's EventSource follows it:
        a stream cut or ended early is opened again after the server's ``retry`` (a crowd
        falling back to polling all at once swamped the products processes); a refused one
        (not 200), or STREAM_ATTEMPTS in a row that told nothing, means polling instead."""
        retry_ms = DEFAULT_RETRY_MS
        fruitless = 0
        while fruitless < STREAM_ATTEMPTS:
            told, final, retry_ms = await self._stream_once(b, retry_ms)
            if final:
                return True
            if told is None:  # refused
                return False
            fruitless = 0 if told else fruitless + 1
            self.seen.errors["stream reopened"] += 1
            await asyncio.sleep(retry_ms / 1000 * self.rng.uniform(1.0, 1.5))
        return False

    async def _stream_once(self, b: Buyer, retry_ms: int) -> tuple[bool | None, bool, int]:
        """(frames seen, or None when the stream was refused; ticket final; retry in ms)."""
        url = f"/api/products/{self.s.pid}/queue/me/events"
        headers = {"Authorization": f"Bearer {b.token}", "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        told = False
        self.streams_opened(1)
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as r:
                self.seen.statuses[f"stream {r.status}"] += 1
                if r.status != 200:
                    return None, False, retry_ms
                async for line in r.content:
                    if line.startswith(b"retry: "):
                        retry_ms = int(line[7:])
                    elif line.startswith(b"data: "):
                        told = True
                        ticket = orjson.loads(line[6:])
                        if await self.on_ticket(b, ticket, via_stream=True):
                            return True, True, retry_ms
                self.seen.errors["stream ended before the ticket was final"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.seen.errors[f"stream {type(exc).__name__}"] += 1
        finally:
            self.streams_opened(-1)
        return told, False, retry_ms

    def streams_opened(self, n: int) -> None:
        self.seen.open_streams += n
        self.seen.max_streams = max(self.seen.max_streams, self.seen.open_streams)
        if OPEN_STREAMS is not None:
            OPEN_STREAMS[self.s.index] = self.seen.open_streams

    async def follow_poll(self, b: Buyer) -> None:
        url = f"/api/products/{self.s.pid}/queue/me"
        backoff = 1.0
        while True:
            status, ticket = await self.call("GET", url, "ticket", b)
            if status == 200 and await self.on_ticket(b, ticket, via_stream=False):
                return
            # An overloaded answer (or none) backs off, as a client should, up to 8x.
            backoff = 1.0 if status == 200 else min(8.0, backoff * 2)
            await asyncio.sleep(self.s.poll_seconds * backoff * self.rng.uniform(0.8, 1.2))

    async def buy(self, b: Buyer, admission: str) -> None:
        """Order one pair of a size still on sale, with the admission; then pay. The product's
        page may be a moment old: a size refused as sold out is not asked for again until the
        page has been read anew, and the buyer goes on until the page shows none left."""
        refused: set[str] = set()
        for attempt in range(MAX_ORDER_ATTEMPTS):
            status, product = await self.call("GET", f"/api/products/{self.s.pid}", "product")
            items = product["items"] if status == 200 else []
            shown = [i["id"] for i in items if i["stock_remaining"] > 0]
            left = [i for i in shown if i not in refused]
            if not shown:
                break
            if not left:  # every size on the page was refused: the page is a moment old
                await asyncio.sleep(PAGE_SECONDS)
                refused.clear()
                continue
            item = self.rng.choice(left)
            status, order = await self.call(
                "POST",
                "/api/orders",
                "order",
                b,
                json={"lines": [{"item_id": item, "quantity": 1}]},
                headers={
                    "Idempotency-Key": f"bq-{self.s.run_id}-{b.id}-{attempt}",
                    "Admission-Token": admission,
                },
            )
            if status == 201:
                self.seen.created.append(order["id"])
                await self.pay(b, order["id"])
                return
            code = (order or {}).get("code")
            self.seen.refusals[f"{status}:{code}"] += 1
            if code != "sold_out":
                return
            refused.add(item)
        self.seen.met_sold_out += 1

    async def pay(self, b: Buyer, order_id: str) -> None:
        decline = self.rng.random() < self.s.decline_share
        card = DECLINE_CARD if decline else APPROVE_CARD
        amount = self.s.price
        # A buyer whose pay button got no answer presses it again, a moment later, as long as
        # the order waits for payment (the confirm under the same Idempotency-Key).
        for attempt in range(PAY_ATTEMPTS):
            if attempt:
                await asyncio.sleep(PAY_RETRY_SECONDS * self.rng.uniform(1.0, 2.0))
            status, auth = await self.call(
                "POST",
                "/pg/v1/sandbox/authorizations",
                "pg",
                json={"order_id": order_id, "amount": amount, "card_number": card},
            )
            if status != 200:
                if status and status < 500:
                    break
                continue
            status, _ = await self.call(
                "POST",
                "/api/payments/confirm",
                "confirm",
                b,
                json={"order_id": order_id, "payment_key": auth["payment_key"], "amount": amount},
                headers={"Idempotency-Key": f"bp-{self.s.run_id}-{order_id}-{attempt}"},
            )
            if status and status < 500:
                self.seen.paid[f"{'declined' if decline else 'approved'}:{status}"] += 1
                return
        self.seen.paid[f"gave up after {PAY_ATTEMPTS}: {status}"] += 1


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


async def _run(s: Slice) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(
        limit=0, local_addr=(s.source_ip, 0) if s.source_ip else None, ttl_dns_cache=None
    )
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(s.gateway_url, connector=connector, timeout=timeout) as http:
        shopper = Shopper(s, http)
        tasks = [asyncio.create_task(shopper.life(b)) for b in s.buyers]
        # Every buyer done, the deadline, or the bench gone: whichever comes first. (Waiting
        # on the buyers and the orphan watch together as one set waited for the deadline.)
        everyone = asyncio.ensure_future(asyncio.wait(tasks))
        orphaned = asyncio.create_task(_parent_gone())
        await asyncio.wait(
            [everyone, orphaned],
            timeout=max(1.0, s.deadline - time.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        why = "bench gone" if orphaned.done() else "buyers done" if everyone.done() else "deadline"
        shopper.seen.ended[why] += 1
        everyone.cancel()
        orphaned.cancel()
        done = {t for t in tasks if t.done()}
        pending = {t for t in tasks if not t.done()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        crashed = [repr(t.exception()) for t in done if t.exception() is not None]
    out = shopper.seen.as_dict()
    out["unfinished"] = len(pending)
    out["crashed"] = crashed[:20]
    out["crashed_count"] = len(crashed)
    return out


async def _parent_gone() -> None:
    """Returns once the bench that started this worker is gone (killed, interrupted): a load
    left running on its own would go on loading the platform for minutes."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110  (nothing to wait on but polling)
        await asyncio.sleep(1.0)


def init_worker(open_streams: Any) -> None:
    """ProcessPoolExecutor initializer: the shared counters of open streams."""
    global OPEN_STREAMS  # one per worker process, set once before any slice
    OPEN_STREAMS = open_streams


def run_slice(s: Slice) -> dict[str, Any]:
    """A worker process's whole job (ProcessPoolExecutor target)."""
    return asyncio.run(_run(s))
