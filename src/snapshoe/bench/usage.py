"""The platform's memory and CPU while a benchmark runs, from /proc (Linux): every process of the
gateway, the services and workers, and the stores, grouped, sampled at an interval; and the
bench's own processes as a group of their own (the load, not the platform: if they are busy,
the figures say more about the load generator than about the platform)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# What a command line says about the part it is; the first match wins. A process that matches
# none (a uvicorn worker is ``python -c "from multiprocessing.spawn ..."``) is its parent's.
GROUPS: tuple[tuple[str, str], ...] = (
    ("haproxy", "gateway"),
    ("snapshoe", "services"),  # ``snapshoe up``, its services, workers, mail sink, sandbox PG
    ("mariadbd", "stores"),
    ("mysqld", "stores"),
    ("redis-server", "stores"),
    ("beam.smp", "stores"),  # RabbitMQ
)


def _processes() -> dict[str, tuple[str, str]]:
    """pid -> (parent pid, command line) of every process still there."""
    out = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (stat[1], cmd.decode(errors="ignore"))
    return out


def groups(procs: dict[str, tuple[str, str]], me: str) -> dict[str, str]:
    """pid -> group: this process and its descendants are "bench"; then the command line."""
    out: dict[str, str] = {}

    def group(pid: str, depth: int = 0) -> str | None:
        if pid in out or pid not in procs or depth > 8:
            return out.get(pid)
        parent, cmd = procs[pid]
        found = "bench" if pid == me else None
        found = found or next((g for needle, g in GROUPS if needle in cmd), None)
        if found is None or found != "bench":
            up = group(parent, depth + 1)
            found = "bench" if up == "bench" else found or up
        if found is not None:
            out[pid] = found
        return found

    for pid in procs:
        group(pid)
    return out


def _cpu_and_rss(pid: str) -> tuple[float, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state is field 3, utime 14, stime 15, rss 24 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[21]) * PAGE


def snapshot() -> dict[str, tuple[float, int, int]]:
    """group -> (CPU seconds so far, resident bytes, processes)."""
    out: dict[str, tuple[float, int, int]] = {}
    for pid, group in groups(_processes(), str(os.getpid())).items():
        usage = _cpu_and_rss(pid)
        if usage is None:
            continue
        cpu, rss, n = out.get(group, (0.0, 0, 0))
        out[group] = (cpu + usage[0], rss + usage[1], n + 1)
    return out


@dataclass
class Sampler:
    """Samples every ``interval`` s; ``extra`` adds a figure of its own to each sample."""

    interval: float = 2.0
    extra: Callable[[], dict[str, float]] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> None:
        last = await asyncio.to_thread(snapshot)
        last_at = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now_snap = await asyncio.to_thread(snapshot)
            now = time.monotonic()
            sample: dict[str, Any] = {"t": time.time()}
            for group, (cpu, rss, n) in now_snap.items():
                before = last.get(group, (cpu, 0, 0))[0]
                sample[group] = {
                    "cores": round(max(0.0, cpu - before) / (now - last_at), 2),
                    "rss_mb": round(rss / 2**20),
                    "processes": n,
                }
            if self.extra is not None:
                sample.update(self.extra())
            self.samples.append(sample)
            last, last_at = now_snap, now

    def peak(self, key: str) -> dict[str, Any] | None:
        """The sample where ``key`` (an extra figure) was highest, e.g. streams held."""
        with_key = [s for s in self.samples if key in s]
        return max(with_key, key=lambda s: s[key]) if with_key else None
