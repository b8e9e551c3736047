"""The drop benchmark's settings, records and refusals: what a run is asked to do
(``DropConfig``), what it made and saw (``Drop``, ``Stampede``), and why a platform as it runs
cannot give it an honest figure (``BenchRefused`` with ``window_problem``, ``baselines_problem``;
the connection cap is in ``probe``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshoe.bench import checks
from snapshoe.bench.wrk import WrkRun

APPROVE_CARD = "4111111111110000"
DECLINE_CARD = "4111111111110002"  # the sandbox PG declines cards ending in 0002

QUIET_SECONDS = 3.0
# Winners pay right after the stampede; an order that expires sooner than this cannot be
# paid in time under load: the platform's payment window is shorter than the drop.
PAY_MARGIN_SECONDS = 2.0
MAX_ROUNDS = 50  # re-buy rounds after the stampede
# Responses drop.lua counts apart: not answers to an order (see the script).
NOT_ATTEMPTS = ("200", "408")

TARGETS = {
    "vs_floor_min": 0.6,
    "vs_db_lock_min": 5.0,
    "p99_ms_max": 250.0,
    "stampede_seconds_max": 10.0,
}


@dataclass
class DropConfig:
    buyers: int = 20_000
    pairs: int = 1_000
    sizes: int = 10
    per_user_limit: int = 1
    connections: int = 1_000
    threads: int = 2
    decline_share: float = 0.1
    compare: bool = False
    compare_seconds: float = 15.0
    lead_seconds: float = 3.0
    max_seconds: float = 120.0
    price: int = 150_000
    pay_concurrency: int = 32
    # Time cap of the payments and re-buy rounds after the stampede.
    pay_max_seconds: float = 300.0
    seed: int | None = None
    out: Path | None = None
    html: bool = True

    def validate(self) -> None:
        if not 1 <= self.sizes <= 30:
            raise ValueError("sizes: 1..30 (250..395 mm)")
        if self.pairs < self.sizes:
            raise ValueError("pairs must be at least sizes")
        if self.buyers < 1 or self.threads < 1 or self.connections < 1:
            raise ValueError("buyers, threads and connections must be positive")
        if not 0 <= self.decline_share <= 1:
            raise ValueError("decline_share: 0..1")
        if self.max_seconds <= 0 or self.pay_max_seconds <= 0:
            raise ValueError("max_seconds and pay_max_seconds must be positive")


def window_problem(window: checks.PaymentWindow | None, stampede_seconds: float) -> str | None:
    """Why the drop cannot go on, if the platform's payment window is shorter than it: the
    winners' orders expire before they are paid, their pairs go back on sale, are bought
    again and expire again, for as many rounds as there are buyers."""
    if window is None or (not window.expired and window.first_expiry_in >= PAY_MARGIN_SECONDS):
        return None
    if window.expired:
        when = f"{window.expired} orders already expired"
    elif window.first_expiry_in <= 0:
        when = f"the first orders' window closed {-window.first_expiry_in:.1f} s ago"
    else:
        when = f"the first orders expire in {window.first_expiry_in:.1f} s"
    return (
        f"stopped: the platform's payment window ({window.seconds:g} s, "
        f"SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS of its orders service) is shorter than this drop "
        f"(stampede {stampede_seconds:.1f} s, then payments): {when}, so winners cannot pay "
        "before their pairs are sold again; raise the TTL on the platform or run a smaller drop"
    )


def baselines_problem(url: str, floor_status: int) -> str | None:
    """Why ``--compare`` cannot run, if the platform at ``url`` answered the floor route
    (``GET /api/orders/-/floor`` with a buyer's token) with ``floor_status``: the baselines (the
    floor and ``db_lock`` products) exist only on a platform started with
    SNAPSHOE_BENCH_BASELINES=true."""
    if floor_status == 200:
        return None
    return (
        f"--compare needs the benchmark baselines, and the platform at {url} answers "
        f"GET /api/orders/-/floor with {floor_status}: start the platform with "
        "SNAPSHOE_BENCH_BASELINES=true for this run (the floor route and db_lock products "
        "exist only then), or run without --compare"
    )


class BenchRefused(RuntimeError):
    """The platform, as it runs, cannot give this benchmark an honest figure; says what to do."""


@dataclass
class Drop:
    product_id: str
    stock_mode: str
    items: list[dict[str, Any]]
    release_ts: float = 0.0


@dataclass
class Stampede:
    """What one wrk drop run saw."""

    tag: str
    run: WrkRun
    counts: dict[str, int]
    summary: dict[str, str]
    ok: dict[str, int]  # order id -> receive time (us)
    sent: dict[str, int]  # idempotency key -> send time (us)
    quantiles_ms: list[tuple[float, float]]  # (percentile, latency) of all attempts
    cpu_share: float | None
    sell_out: list[tuple[float, int]] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return sum(n for k, n in self.counts.items() if k not in NOT_ATTEMPTS)

    @property
    def seconds(self) -> float:
        first = int(self.summary.get("first_send_us", "0"))
        last = int(self.summary.get("last_answer_us", "0"))
        return max(0.0, (last - first) / 1e6)

    @property
    def per_second(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0

    def pct_ms(self, p: str) -> float | None:
        v = self.summary.get(f"latency_p{p}_us")
        return round(float(v) / 1000, 2) if v is not None else None

    def status_total(self, status: int) -> int:
        return sum(n for k, n in self.counts.items() if k.split(":")[0] == str(status))

    def five_xx(self) -> int:
        return sum(n for k, n in self.counts.items() if k.split(":")[0].startswith("5"))
