"""Running wrk (the load generator) and measuring what it costs.

wrk is C with LuaJIT scripts, so on a 2-core machine it leaves most of the CPU to the
platform; its own CPU is read from ``/proc/<pid>/stat`` and reported, not assumed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def script_path(name: str) -> Path:
    """A wrk Lua script shipped inside this package (so an installed snapshoe has it)."""
    return Path(str(resources.files("snapshoe.bench").joinpath(name)))


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return found


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class WrkRun:
    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    # (monotonic time, cpu seconds) samples of the wrk process while it ran.
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)
    stopped_early: bool = False  # the deadline came before every thread finished

    def cpu_between(self, start: float, end: float) -> tuple[float, float] | None:
        """CPU seconds and wall seconds between the samples nearest to [start, end]."""
        inside = [s for s in self.cpu_samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]


async def run_wrk(
    args: list[str],
    env: dict[str, str],
    *,
    finished: Callable[[], bool] | None = None,
    deadline: float | None = None,
    tick: Callable[[], Awaitable[None]] | None = None,
    interval: float = 0.05,
) -> WrkRun:
    """Run wrk; every ``interval`` sample its CPU and call ``tick``. wrk's main thread sleeps
    for the whole ``-d``, so once ``finished()`` says every thread is done (or at
    ``deadline``, a monotonic time) it gets SIGINT, which makes it print and call done()."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        wrk_binary(),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    run = WrkRun(0, "", "", 0.0)
    communicate = asyncio.create_task(proc.communicate())
    signalled = False
    while not communicate.done():
        cpu = cpu_seconds(proc.pid)
        if cpu is not None:
            run.cpu_samples.append((time.monotonic(), cpu))
        if tick is not None:
            await tick()
        if not signalled:
            late = deadline is not None and time.monotonic() > deadline
            if late or (finished is not None and finished()):
                run.stopped_early = late and not (finished is not None and finished())
                proc.send_signal(signal.SIGINT)
                signalled = True
        await asyncio.wait({communicate}, timeout=interval)
    out, err = communicate.result()
    run.returncode = proc.returncode if proc.returncode is not None else -1
    run.stdout, run.stderr = out.decode(errors="replace"), err.decode(errors="replace")
    run.wall_seconds = time.monotonic() - started
    return run


def read_pairs(path: Path) -> dict[str, str]:
    """``key value`` lines of a result file wrk's done() wrote."""
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key:
                out[key] = value
    return out
