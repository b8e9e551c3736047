"""Setup of a drop (not timed): the checks that the running platform can give an honest
figure, the buyers and their tokens, the drop product and its release moment.

``Bench`` holds what every phase of a run shares: the settings, the run's config and id, the
admin and buyer tokens (minted with the platform's key, as the users service issues them), the
random source of the workload and the log."""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from snapshoe.bench import checks
from snapshoe.bench.drop_model import BenchRefused, Drop, DropConfig, baselines_problem
from snapshoe.bench.http import HTTP_ERRORS, Client
from snapshoe.bench.probe import cap_problem, connections_kept
from snapshoe.kernel.auth import build_issuer
from snapshoe.kernel.settings import Settings


class Bench:
    def __init__(self, settings: Settings, cfg: DropConfig, workdir: Path) -> None:
        self.settings = settings
        self.cfg = cfg
        self.workdir = workdir
        # Which size each buyer wants, who declines: a workload, not a secret.
        self.rng = random.Random(cfg.seed)  # noqa: S311
        self.run_id = secrets.token_hex(4)
        self.issuer = build_issuer(settings)
        admin, _ = self.issuer.issue_access(
            f"bench-admin-{self.run_id}", email_verified=True, roles=("admin",)
        )
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.buyer_ids: list[str] = []
        self.dead_letters_before: dict[str, int] = {}  # set by run_drop (settle_checks)
        self.tokens: dict[str, str] = {}
        self.log_lines: list[str] = []

    def log(self, msg: str) -> None:
        line = f"[bench {time.strftime('%H:%M:%S')}] {msg}"
        self.log_lines.append(line)
        print(line, flush=True)

    def client(self) -> Client:
        return Client(self.settings.gateway_url, timeout=60, max_connections=64)

    # Setup

    async def make_buyers(self) -> None:
        self.buyer_ids = [f"bench-{self.run_id}-{n}" for n in range(self.cfg.buyers)]
        await checks.create_buyers(self.settings, self.buyer_ids, self.run_id)
        self.mint_tokens()

    def mint_tokens(self) -> None:
        """Access tokens (15 min at most) for every buyer, as the users service issues them."""
        now = time.time()
        self.tokens = {
            b: self.issuer.issue_access(b, email_verified=True, now=now)[0] for b in self.buyer_ids
        }
        self.tokens_minted = now

    def ensure_fresh_tokens(self, need_seconds: float) -> None:
        ttl = self.settings.access_token_ttl_seconds
        if time.time() + need_seconds > self.tokens_minted + ttl - 5:
            self.mint_tokens()

    async def create_drop(self, client: Client, stock_mode: str) -> Drop:
        cfg = self.cfg
        r = await client.post(
            "/api/admin/products",
            headers=self.admin,
            json={
                "name": f"Bench drop {self.run_id} ({stock_mode})",
                "brand": "SnapShoe Bench",
                "description": "snapshoe bench drop",
                "price": cfg.price,
                "release_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                "per_user_limit": cfg.per_user_limit,
                "stock_mode": stock_mode,
            },
        )
        r.raise_for_status()
        pid = r.json()["id"]
        items = []
        for n in range(cfg.sizes):
            stock = cfg.pairs // cfg.sizes + (1 if n < cfg.pairs % cfg.sizes else 0)
            r = await client.post(
                f"/api/admin/products/{pid}/items",
                headers=self.admin,
                json={"size": 250 + 5 * n, "color": "Bench", "stock": stock},
            )
            r.raise_for_status()
            items.append(r.json())
        return Drop(pid, stock_mode, items)

    async def schedule_release(self, client: Client, drop: Drop) -> None:
        release = datetime.now(UTC) + timedelta(seconds=self.cfg.lead_seconds)
        release = release.replace(microsecond=(release.microsecond // 1000) * 1000)
        r = await client.patch(
            f"/api/admin/products/{drop.product_id}",
            headers=self.admin,
            json={"release_at": release.isoformat()},
        )
        r.raise_for_status()
        # The gate compares with the service's clock (same machine): start a hair after.
        drop.release_ts = release.timestamp() + 0.005

    def write_tokens(self, drop: Drop, tag: str, buyers: list[str]) -> Path:
        path = self.workdir / f"{tag}.tokens"
        item_ids = [i["id"] for i in drop.items]
        with path.open("w") as f:
            for n, b in enumerate(buyers):
                key = f"bd-{self.run_id}-{tag}-{n}"
                f.write(f"{key} {self.rng.choice(item_ids)} {self.tokens[b]}\n")
        return path


async def check_platform(bench: Bench, client: Client) -> None:
    """Before the setup: the platform answers, keeps the connections wrk opens and, for
    ``--compare``, has the baselines; otherwise ``BenchRefused`` says which setting to change."""
    settings, cfg = bench.settings, bench.cfg
    r = await client.get("/api/products", params={"limit": 1})
    if r.status >= 500:
        raise RuntimeError(f"the platform is not answering at {settings.gateway_url}")
    kept = await connections_kept(settings.gateway_url, cfg.connections)
    if problem := cap_problem(settings.gateway_url, kept, cfg.connections):
        raise BenchRefused(problem)
    if cfg.compare:
        status = await floor_status(bench, client)
        if problem := baselines_problem(settings.gateway_url, status):
            raise BenchRefused(problem)


async def floor_status(bench: Bench, client: Client) -> int:
    """The status of one ``GET /api/orders/-/floor`` with a freshly minted buyer's token."""
    token, _ = bench.issuer.issue_access(f"bench-probe-{bench.run_id}", email_verified=True)
    with contextlib.suppress(*HTTP_ERRORS):
        r = await client.get("/api/orders/-/floor", headers={"Authorization": f"Bearer {token}"})
        return r.status
    return 0
