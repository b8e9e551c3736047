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

    def cpu_at(self, at: float) -> float | None:
        """wrk's CPU seconds at monotonic time ``at``, interpolated between the samples on
        either side of it; None outside the sampled span."""
        before = [s for s in self.cpu_samples if s[0] <= at]
        after = [s for s in self.cpu_samples if s[0] >= at]
        if not before or not after:
            return None
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (at - t0) / (t1 - t0)

    def cpu_between(self, start: float, end: float) -> tuple[float, float] | None:
        """CPU seconds and wall seconds over [start, end]. Interpolated at both ends, so a
        window shorter than the sampling interval (a small stampede on a loaded machine,
        where the samples came further apart) still has a figure, taken over the part of the
        window the samples cover; None only when the window lies outside the samples."""
        if not self.cpu_samples:
            return None
        # The window's part inside the samples: wrk exits right after the last answer, so
        # the window often ends after the last sample (the CI-size drop's sale is < 1 s).
        lo, hi = max(start, self.cpu_samples[0][0]), min(end, self.cpu_samples[-1][0])
        if hi <= lo:
            return None
        first, last = self.cpu_at(lo), self.cpu_at(hi)
        if first is None or last is None:
            return None
        return last - first, hi - lo


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
