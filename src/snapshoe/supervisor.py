"""Runs the platform's processes in the foreground with one readable log stream.

Each child gets its own process group so that Ctrl-C reaches only this supervisor, which then
stops children in reverse start order (SIGTERM to the whole group, SIGKILL after a grace period)
and leaves no orphans: uvicorn's worker processes share their parent's group and go with it.
If any child dies on its own, everything stops and ``up`` exits non-zero: a half-running
platform is worse than a stopped one.

Start-up goes in stages (dependencies first), each waited for before the next starts, under
one deadline: on a busy 2-core machine ~18 processes importing at once each took 3-4 s of CPU
and made every one of them late; in stages the first ones are ready early, and a failure names
the process that is slow or dead with its last log lines instead of a list of everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

TAIL_LINES = 20

_COLORS = ["36", "32", "33", "35", "34", "91", "92", "93", "94", "95", "96"]


@dataclass
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Running:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None]


class Supervisor:
    def __init__(self, specs: Sequence[ProcessSpec], *, grace_seconds: float = 10.0) -> None:
        self.specs = list(specs)
        self.grace = grace_seconds
        self.running: list[_Running] = []
        self._width = max((len(s.name) for s in specs), default=4)
        self._color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._stop = asyncio.Event()
        self.failed: str | None = None
        # The last lines of each child, to show when it is the one start-up waits for.
        self.tails: dict[str, deque[str]] = {s.name: deque(maxlen=TAIL_LINES) for s in specs}

    def log(self, name: str, line: str) -> None:
        prefix = name.ljust(self._width)
        if self._color:
            idx = [s.name for s in self.specs].index(name) if name in self._names else -1
            color = _COLORS[idx % len(_COLORS)] if idx >= 0 else "1"
            prefix = f"\x1b[{color}m{prefix}\x1b[0m"
        sys.stdout.write(f"{prefix} | {line}\n")
        sys.stdout.flush()

    @property
    def _names(self) -> list[str]:
        return [s.name for s in self.specs]

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self.tails[name].append(text)
            self.log(name, _readable(text) if self._color else text)

    async def start(self, specs: Sequence[ProcessSpec] | None = None) -> None:
        for spec in self.specs if specs is None else specs:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env={**os.environ, **spec.env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            assert proc.stdout is not None
            pump = asyncio.create_task(self._pump(spec.name, proc.stdout))
            self.running.append(_Running(spec, proc, pump))
            self.log("up", f"started {spec.name} (pid {proc.pid})")

    async def watch(self) -> None:
        """Return when a child exits on its own or stop() was requested."""
        waits = {asyncio.create_task(r.proc.wait()): r for r in self.running}
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([*waits, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waits:
                r = waits[task]
                self.failed = r.spec.name
                self.log("up", f"{r.spec.name} exited with {r.proc.returncode}; stopping all")
        for task in [*waits, stop_wait]:
            task.cancel()

    def request_stop(self) -> None:
        self._stop.set()

    def tail(self, name: str) -> str:
        lines = list(self.tails.get(name, ()))
        if not lines:
            return f"    {name} | (no output yet: still importing?)"
        return "\n".join(f"    {name} | {line}" for line in lines)

    async def wait_ready(
        self,
        specs: Sequence[ProcessSpec],
        is_ready: Callable[[ProcessSpec], Awaitable[bool]],
        deadline: float,
        budget: float,
    ) -> str | None:
        """Wait until every process of ``specs`` is ready. Returns None when they are (or a
        stop was requested), else why start-up failed, with the culprit's last log lines."""
        pending = list(specs)
        while True:
            for r in self.running:
                if r.proc.returncode is not None:
                    return (
                        f"{r.spec.name} exited with {r.proc.returncode} during start-up; "
                        f"its last log lines:\n{self.tail(r.spec.name)}"
                    )
            if self._stop.is_set():
                return None
            pending = [s for s in pending if not await is_ready(s)]
            if not pending:
                return None
            if time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                tails = "\n".join(self.tail(s.name) for s in pending)
                return (
                    f"not ready after {budget:g}s (SNAPSHOE_STARTUP_TIMEOUT_SECONDS): {names}; "
                    f"last log lines:\n{tails}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)

    async def stop(self) -> None:
        for r in reversed(self.running):
            _signal_group(r.proc, signal.SIGTERM)
        for r in reversed(self.running):
            try:
                await asyncio.wait_for(r.proc.wait(), self.grace)
            except TimeoutError:
                self.log("up", f"{r.spec.name} did not stop in {self.grace:.0f}s; killing")
                _signal_group(r.proc, signal.SIGKILL)
                await r.proc.wait()
            # Stragglers in the group (e.g. a uvicorn worker) go too.
            _signal_group(r.proc, signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(r.pump, 2)
        self.log("up", "all processes stopped")


def _readable(line: str) -> str:
    """On a terminal, show a JSON log line as ``time level message key=value``; elsewhere
    (files, CI) the JSON stays as it is, for machines."""
    if not line.startswith("{"):
        return line
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    head = (
        f"{entry.pop('ts', '')[11:23]} {entry.pop('level', '').upper():<5} {entry.pop('msg', '')}"
    )
    for key in ("service", "logger"):
        entry.pop(key, None)
    rest = " ".join(f"{k}={v}" for k, v in entry.items() if k != "exc")
    exc = entry.get("exc")
    return f"{head}  {rest}".rstrip() + (f"\n{exc}" if exc else "")


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_foreground(
    stages: Sequence[Sequence[ProcessSpec]],
    is_ready: Callable[[ProcessSpec], Awaitable[bool]],
    *,
    budget: float,
    ready_message: str,
) -> int:
    """Start ``stages`` in order, each once the previous one is ready, all within ``budget``
    seconds; then run until a child exits or SIGINT/SIGTERM. Returns the exit code."""
    sup = Supervisor([spec for stage in stages for spec in stage])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sup.request_stop)
    try:
        deadline = time.monotonic() + budget
        problem = None
        for stage in stages:
            await sup.start(stage)
            problem = await sup.wait_ready(stage, is_ready, deadline, budget)
            if problem is not None or sup._stop.is_set():
                break
        if problem is not None:
            sup.log("up", f"start-up failed: {problem}")
            sup.failed = "start-up"
        elif not sup._stop.is_set():
            sup.log("up", ready_message)
            await sup.watch()
    finally:
        await sup.stop()
    return 1 if sup.failed else 0
