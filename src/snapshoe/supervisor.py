"""Runs the platform's processes in the foreground with one readable log stream.

Each child gets its own process group so that Ctrl-C reaches only this supervisor, which then
stops children in reverse start order (SIGTERM to the whole group, SIGKILL after a grace period)
and leaves no orphans: uvicorn's worker processes share their parent's group and go with it.

Once the platform is up, a child that dies on its own is restarted, as Kubernetes restarts a
container: its group is killed (a uvicorn worker left behind would hold the port), the log says
which child, how it ended, its last lines, when it comes back and how many restarts it has had,
and after a delay that doubles with each crash in a row (0.5 s, 1 s, 2 s, ... up to 30 s:
:class:`Backoff`) it runs again with the same argv and env. A child that then stays up for
60 s starts over at 0.5 s (Kubernetes' CrashLoopBackOff waits 10 min; a dev supervisor, whose
crashes are found by someone watching, forgets sooner). A child stopped by the supervisor itself
(Ctrl-C, SIGTERM) is never restarted.

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


@dataclass(frozen=True)
class Backoff:
    """How long a crashed child waits before its restart: ``initial`` after its first crash in a
    row, doubling with each further one up to ``cap``; a child that stayed up ``reset_after``
    seconds before it crashed counts as crashing for the first time again."""

    initial: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, crashes: int) -> float:
        """The wait after the ``crashes``-th crash in a row (1 for the first)."""
        return float(min(self.cap, self.initial * 2 ** min(max(crashes, 1) - 1, 64)))

    def crashes_in_a_row(self, before: int, uptime: float) -> int:
        """The count after a crash that ended ``uptime`` seconds of running, ``before`` being
        the count of crashes in a row until then."""
        return 1 if uptime >= self.reset_after else before + 1


@dataclass
class _Running:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0  # since `up` started
    crashes: int = 0  # in a row, for the backoff


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        grace_seconds: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.specs = list(specs)
        self.grace = grace_seconds
        self.backoff = backoff or Backoff()
        self.running: list[_Running] = []
        self._width = max((len(s.name) for s in specs), default=4)
        self._color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._stop = asyncio.Event()
        # Held while a child is being (re)started, so that stop() never misses one.
        self._spawning = asyncio.Lock()
        self._keepers: list[asyncio.Task[None]] = []
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

    async def _spawn(
        self, spec: ProcessSpec
    ) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        return proc, asyncio.create_task(self._pump(spec.name, proc.stdout))

    async def start(self, specs: Sequence[ProcessSpec] | None = None) -> None:
        for spec in self.specs if specs is None else specs:
            async with self._spawning:
                proc, pump = await self._spawn(spec)
                self.running.append(_Running(spec, proc, pump))
            self.log("up", f"started {spec.name} (pid {proc.pid})")

    async def watch(self) -> None:
        """Run until stop() is requested, restarting each child that exits on its own."""
        self._keepers = [asyncio.create_task(self._keep(r)) for r in self.running]
        try:
            await self._stop.wait()
        finally:
            await self._end_keepers()

    async def _end_keepers(self) -> None:
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        self._keepers = []

    async def _keep(self, r: _Running) -> None:
        """Restart ``r`` with backoff each time it exits, until a stop is requested."""
        name = r.spec.name
        while True:
            code = await _exited(r.proc)
            if self._stop.is_set():
                return
            uptime = time.monotonic() - r.started
            # Stragglers of its group (uvicorn workers of a killed master) would keep the port.
            _signal_group(r.proc, signal.SIGKILL)
            await asyncio.wait({r.pump}, timeout=2)  # its last lines, for the log
            ended = f"{name} (pid {r.proc.pid}) {describe_exit(code)} after {uptime:.1f}s up"
            while True:
                r.crashes = self.backoff.crashes_in_a_row(r.crashes, uptime)
                delay = self.backoff.delay(r.crashes)
                at = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
                self.log(
                    "up",
                    f"{ended}; restarting it in {delay:g}s, at {at} (restart {r.restarts + 1}, "
                    f"crash {r.crashes} in a row); its last log lines:\n{self.tail(name)}",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return
                async with self._spawning:
                    if self._stop.is_set():
                        return
                    try:
                        proc, pump = await self._spawn(r.spec)
                    except OSError as exc:  # e.g. the binary is gone: try again, later
                        ended, uptime = f"{name} could not be started again ({exc})", 0.0
                        continue
                    r.proc, r.pump, r.started = proc, pump, time.monotonic()
                    r.restarts += 1
                break
            self.log("up", f"restarted {name} (pid {r.proc.pid}, restart {r.restarts})")

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
        # No restart from here on, and none half-way: a child being started is in self.running
        # once the lock is free.
        self._stop.set()
        await self._end_keepers()
        async with self._spawning:
            pass
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
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
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


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The child's return code once it has exited. Not ``proc.wait()``: that also waits for its
    stdout to close, which a uvicorn worker left in its group (inheriting the pipe) delays for
    as long as the worker lives."""
    while proc.returncode is None:  # noqa: ASYNC110 (set by asyncio's child watcher: no event)
        await asyncio.sleep(0.1)
    return proc.returncode


def describe_exit(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL (signal 9)``, from a return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by {name} (signal {-code})"
    return f"exited with code {code}"


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_foreground(
    stages: Sequence[Sequence[ProcessSpec]],
    is_ready: Callable[[ProcessSpec], Awaitable[bool]],
    *,
    budget: float,
    ready_message: str,
    backoff: Backoff | None = None,
) -> int:
    """Start ``stages`` in order, each once the previous one is ready, all within ``budget``
    seconds (a child that dies or is late meanwhile stops everything: exit 1); then run until
    SIGINT/SIGTERM, restarting a child that exits on its own with ``backoff``. Returns the exit
    code."""
    sup = Supervisor([spec for stage in stages for spec in stage], backoff=backoff)
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
