"""What ``bench soak`` samples of every platform process, from /proc (Linux; no psutil): its
resident memory, CPU, open files and the TCP connections it holds to MariaDB (3306), Redis
(6379) and RabbitMQ (5672).

The processes are found as ``bench drop`` finds them (``usage``: every process's parent and
command line, a ``snapshoe`` or ``haproxy`` one being the platform's), narrowed to the
platform under test: a ``snapshoe up`` / ``serve`` / ``worker`` process, an HAProxy, or a child
of one of them (a uvicorn worker is ``python -c "from multiprocessing.spawn ..."``), whose
environment names the same ``SNAPSHOE_NAMESPACE`` (another platform on the machine, a test
run's or a developer's, is left out; so is this process and any other ``snapshoe`` command).

Each process is labelled by what it is (``up``, ``gateway``, ``orders``, ``orders-worker``,
``orders.1`` for a uvicorn worker of orders...), so that a series follows the label; the pid is
kept beside it, and a label whose pid changes during the run is a restart.

A connection is a socket among the process's fds (``/proc/PID/fd`` -> ``socket:[inode]``)
whose inode is an established TCP connection to one of the ports in ``/proc/net/tcp{,6}``
(one network namespace for the whole machine's platform)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshoe.bench.usage import _cpu_and_rss, _processes

STORES = {"mariadb": 3306, "redis": 6379, "rabbitmq": 5672}
PLATFORM_COMMANDS = ("up", "serve", "worker")
ESTABLISHED = "01"
DEFAULT_NAMESPACE = "snapshoe"


def _argv(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="ignore") for a in raw.split(b"\0") if a]


def _namespace(pid: str) -> str | None:
    """The ``SNAPSHOE_NAMESPACE`` a process runs with (the default without one), or None when
    its environment cannot be read (another user's process, gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in raw.split(b"\0"):
        if entry.startswith(b"SNAPSHOE_NAMESPACE="):
            return entry.split(b"=", 1)[1].decode(errors="ignore")
    return DEFAULT_NAMESPACE


def own_label(argv: list[str]) -> str | None:
    """What a command line says the process is: ``up``, ``gateway``, the service it serves,
    ``<service>-worker``; None for anything else (a bench, ``snapshoe doctor``, an unrelated
    program)."""
    if not argv:
        return None
    if Path(argv[0]).name == "haproxy":
        return "gateway"
    for k, arg in enumerate(argv):
        if arg.endswith("snapshoe.cli") or Path(arg).name == "snapshoe":
            rest = argv[k + 1 :]
            if not rest or rest[0] not in PLATFORM_COMMANDS:
                return None
            if rest[0] == "up":
                return "up"
            if len(rest) < 2:
                return None
            return rest[1] if rest[0] == "serve" else f"{rest[1]}-worker"
    return None


def label_processes(
    procs: Mapping[str, tuple[str, list[str]]], keep: set[str] | None = None
) -> dict[str, str]:
    """pid -> label of the platform's processes among ``procs`` (pid -> (parent pid, argv)):
    those with a label of their own, and children of those (``<parent label>.<n>``, n by pid
    order, from 1). ``keep``: pids that may be labelled (the ones of the right namespace);
    None keeps all. Two processes with the same label (several HAProxy processes) become
    ``gateway``, ``gateway-2``..., by pid order."""
    own: dict[str, str] = {}
    for pid in sorted(procs, key=int):
        if keep is not None and pid not in keep:
            continue
        label = own_label(procs[pid][1])
        if label is not None:
            own[pid] = label
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for pid in sorted(own, key=int):
        base = own[pid]
        seen[base] = seen.get(base, 0) + 1
        out[pid] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    children: dict[str, list[str]] = {}
    for pid in sorted(procs, key=int):
        if pid in out or (keep is not None and pid not in keep):
            continue
        parent = procs[pid][0]
        if parent in out and own_label(procs[pid][1]) is None and out[parent] != "up":
            children.setdefault(parent, []).append(pid)
    for parent, kids in children.items():
        for n, pid in enumerate(kids, start=1):
            out[pid] = f"{out[parent]}.{n}"
    return out


def platform_processes(namespace: str, me: int | None = None) -> dict[str, str]:
    """pid -> label of the running platform of ``namespace`` (this process excluded)."""
    me_pid = str(me if me is not None else os.getpid())
    procs = {
        pid: (parent, _argv(pid)) for pid, (parent, _cmd) in _processes().items() if pid != me_pid
    }
    keep = {pid for pid in procs if _namespace(pid) == namespace}
    return label_processes(procs, keep)


def parse_tcp_table(text: str, ports: Mapping[str, int] = STORES) -> dict[int, str]:
    """inode -> store of the established connections to one of ``ports`` in a
    ``/proc/net/tcp`` (or ``tcp6``) table."""
    by_port = {port: name for name, port in ports.items()}
    out: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != ESTABLISHED:
            continue
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if remote_port in by_port:
            out[int(fields[9])] = by_port[remote_port]
    return out


def store_sockets() -> dict[int, str]:
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            out.update(parse_tcp_table(Path(table).read_text()))
        except OSError:
            continue
    return out


def _fds(pid: str) -> list[str] | None:
    """The targets of a process's open fds (``socket:[123]``, a path...), None if it is gone."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return None
    out = []
    for name in names:
        try:
            out.append(os.readlink(f"{base}/{name}"))
        except OSError:
            continue  # closed meanwhile
    return out


def count_connections(fd_targets: list[str], sockets: Mapping[int, str]) -> dict[str, int]:
    counts = dict.fromkeys(STORES, 0)
    for target in fd_targets:
        if target.startswith("socket:["):
            store = sockets.get(int(target[8:-1]))
            if store is not None:
                counts[store] += 1
    return counts


def snapshot(namespace: str) -> dict[str, dict[str, Any]]:
    """label -> {pid, cpu_s, rss_mb, open_files, mariadb, redis, rabbitmq} of every platform
    process now."""
    labels = platform_processes(namespace)
    sockets = store_sockets()
    out: dict[str, dict[str, Any]] = {}
    for pid, label in labels.items():
        usage = _cpu_and_rss(pid)
        fds = _fds(pid)
        if usage is None or fds is None:
            continue  # gone between the listing and now
        out[label] = {
            "pid": int(pid),
            "cpu_s": usage[0],
            "rss_mb": round(usage[1] / 2**20, 1),
            "open_files": len(fds),
            **count_connections(fds, sockets),
        }
    return out


@dataclass
class ProcessSampler:
    """Samples the platform of ``namespace`` every ``interval`` s until cancelled: ``samples``
    is a list of ``{"t": seconds since t0, "processes": {label: figures}}``, each figure set
    with ``cores`` (CPU since the previous sample) instead of CPU seconds."""

    namespace: str
    t0: float
    interval: float = 5.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    restarts: dict[str, list[int]] = field(default_factory=dict)

    _last: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last_at: float = 0.0

    async def sample_once(self) -> None:
        """One sample now (CPU as cores since the previous one)."""
        snap = await asyncio.to_thread(snapshot, self.namespace)
        now = time.monotonic()
        processes = {}
        for label, figures in snap.items():
            before = self._last.get(label)
            if before is not None and before["pid"] != figures["pid"]:
                self.restarts.setdefault(label, [before["pid"]]).append(figures["pid"])
                before = None
            cores = (
                round(
                    max(0.0, figures["cpu_s"] - before["cpu_s"]) / max(now - self._last_at, 1e-6), 3
                )
                if before is not None
                else None
            )
            processes[label] = {k: v for k, v in figures.items() if k != "cpu_s"} | {"cores": cores}
        self.samples.append({"t": round(time.time() - self.t0, 2), "processes": processes})
        self._last, self._last_at = snap, now

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval)

    def labels(self) -> list[str]:
        return sorted({label for s in self.samples for label in s["processes"]})
