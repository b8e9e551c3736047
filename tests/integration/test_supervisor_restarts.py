"""`snapshoe up`'s supervisor with small real children (``python -c``): a child that dies after
start-up is restarted with backoff and the log says so; one that keeps crashing waits longer
each time; a stop (also during a backoff, also after restarts) leaves no process behind and
restarts nothing; a child that dies during start-up still stops everything (exit 1)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from snapshoe.supervisor import Backoff, ProcessSpec, Supervisor

PY = sys.executable
SLEEPER = "import time; print('sleeper up', flush=True); time.sleep(600)"
# A uvicorn-like parent: a second process in its group (a worker) that outlives a SIGKILL of it.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"parent up, worker {worker.pid}", flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead (reaped later by whoever is its parent).
    stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def supervised(
    specs: list[ProcessSpec], backoff: Backoff | None = None
) -> AsyncIterator[Supervisor]:
    """A started Supervisor watching its children (as `up` does once ready), stopped after."""
    sup = Supervisor(specs, grace_seconds=5, backoff=backoff)
    await sup.start()
    watch = asyncio.create_task(sup.watch())
    try:
        yield sup
    finally:
        await sup.stop()
        await asyncio.wait_for(watch, 5)


def _running(sup: Supervisor, name: str) -> int:
    return next(r.proc.pid for r in sup.running if r.spec.name == name)


async def test_a_child_killed_after_start_is_restarted_with_the_same_argv_and_env(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [PY, "-c", SLEEPER]
    specs = [ProcessSpec("sleeper", argv, {"SNAPSHOE_PROBE": "kept"}), ProcessSpec("other", argv)]
    async with supervised(specs) as sup:
        await _until(lambda: "sleeper up" in "".join(sup.tails["sleeper"]), 10, "sleeper up")
        first, other = _running(sup, "sleeper"), _running(sup, "other")
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        await _until(lambda: _running(sup, "sleeper") != first, 10, "a new sleeper")
        restarted_after = time.monotonic() - killed_at
        second = _running(sup, "sleeper")
        assert _alive(second)
        assert not _alive(first)
        assert _running(sup, "other") == other  # the others are left alone
        cmdline = Path(f"/proc/{second}/cmdline").read_bytes().split(b"\0")[:-1]
        assert [c.decode() for c in cmdline] == argv
        assert b"SNAPSHOE_PROBE=kept" in Path(f"/proc/{second}/environ").read_bytes().split(b"\0")
        await _until(lambda: sup.running[0].restarts == 1, 5, "restart counted")
    assert restarted_after >= Backoff().delay(1)
    log = capsys.readouterr().out
    said = re.search(
        rf"sleeper \(pid {first}\) was killed by SIGKILL \(signal 9\) after [\d.]+s up; "
        r"restarting it in 0.5s, at \d\d:\d\d:\d\d \(restart 1, crash 1 in a row\); "
        r"its last log lines:\n.*sleeper \| sleeper up",
        log,
    )
    assert said, log
    assert f"restarted sleeper (pid {second}, restart 1)" in log
    assert "restarted other" not in log
    assert not _alive(second)


async def test_a_child_that_keeps_crashing_is_restarted_with_growing_delays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each run notes when it started and when it is about to exit (code 3); the gap from one
    run's end to the next run's start is at least the schedule's delay for that crash."""
    times = tmp_path / "times"
    crasher = textwrap.dedent(
        f"""
        import sys, time
        with open({str(times)!r}, "a") as f:
            f.write(f"start {{time.monotonic()}}\\n")
        print("crashing on purpose", flush=True)
        time.sleep(0.1)
        with open({str(times)!r}, "a") as f:
            f.write(f"end {{time.monotonic()}}\\n")
        sys.exit(3)
        """
    )
    backoff = Backoff(initial=0.2, cap=0.8)

    def runs() -> int:
        return times.read_text().count("start") if times.exists() else 0

    async with supervised([ProcessSpec("crasher", [PY, "-c", crasher])], backoff):
        await _until(lambda: runs() >= 5, 30, "4 restarts")
    marks = [line.split() for line in times.read_text().splitlines()]
    starts = [float(t) for kind, t in marks if kind == "start"]
    ends = [float(t) for kind, t in marks if kind == "end"]
    gaps = [start - end for end, start in zip(ends, starts[1:], strict=False)][:4]
    expected = [backoff.delay(n) for n in range(1, 5)]  # 0.2, 0.4, 0.8, 0.8 (the cap)
    assert len(gaps) == 4, marks
    assert all(gap >= want for gap, want in zip(gaps, expected, strict=True)), (gaps, expected)
    log = capsys.readouterr().out
    for n, delay in enumerate(expected, start=1):
        assert re.search(
            rf"exited with code 3 after [\d.]+s up; restarting it in {delay:g}s, at [\d:]+ "
            rf"\(restart {n}, crash {n} in a row\); its last log lines:\n"
            r"(.*\n)*?.*crasher \| crashing on purpose",
            log,
        ), log


async def test_the_backoff_starts_over_once_a_child_stayed_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs 1 and 2 crash at once, run 3 stays up past reset_after, run 4 crashes at once: its
    crash counts as the first in a row again."""
    count = tmp_path / "count"
    flaky = textwrap.dedent(
        f"""
        import pathlib, sys, time
        path = pathlib.Path({str(count)!r})
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        print(f"run {{n}}", flush=True)
        time.sleep(1.2 if n == 3 else 600 if n >= 5 else 0)
        sys.exit(1)
        """
    )
    backoff = Backoff(initial=0.1, cap=5, reset_after=1.0)
    async with supervised([ProcessSpec("flaky", [PY, "-c", flaky])], backoff) as sup:
        await _until(lambda: sup.running[0].restarts >= 4, 30, "4 restarts")
    log = capsys.readouterr().out
    crashes = re.findall(r"restarting it in ([\d.]+)s, at [\d:]+ \(restart (\d), crash (\d)", log)
    assert crashes[:4] == [
        ("0.1", "1", "1"),
        ("0.2", "2", "2"),
        ("0.1", "3", "1"),
        ("0.2", "4", "2"),
    ]


async def test_a_killed_parent_takes_its_group_and_a_stop_after_restarts_leaves_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Like a uvicorn master with workers: the whole group goes before the restart (a worker
    left behind would hold the port), and a stop after restarts leaves no process at all."""

    def worker_pid(sup: Supervisor) -> int | None:
        found = re.search(r"parent up, worker (\d+)", "".join(sup.tails["parent"]))
        return int(found.group(1)) if found else None

    async with supervised([ProcessSpec("parent", [PY, "-c", PARENT])]) as sup:
        pids: list[int] = []
        for _ in range(2):
            await _until(lambda: worker_pid(sup) is not None, 10, "the parent's worker")
            parent, worker = _running(sup, "parent"), worker_pid(sup)
            assert worker is not None
            assert _alive(worker)
            pids += [parent, worker]
            sup.tails["parent"].clear()
            os.kill(parent, signal.SIGKILL)

            def replaced(old: int = parent) -> bool:
                return _running(sup, "parent") != old

            def gone(old: int = worker) -> bool:
                return not _alive(old)

            await _until(replaced, 10, "a new parent")
            await _until(gone, 5, "the old worker gone with its group")
        await _until(lambda: worker_pid(sup) is not None, 10, "the third parent's worker")
        last = _running(sup, "parent")
        pids += [last, worker_pid(sup) or last]
        assert sup.running[0].restarts == 2
    # SIGKILLed processes may take a moment to be gone from /proc.
    await _until(lambda: not any(_alive(p) for p in pids), 2, "none left")
    # Reparented zombies stay in the group until init reaps them.
    await _until(lambda: not _group_alive(last), 5, "its group gone")
    log = capsys.readouterr().out
    assert log.count("restarted parent") == 2
    after_stop = log[log.index("all processes stopped") :]
    assert "restart" not in after_stop


async def test_a_stop_during_a_backoff_restarts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with supervised(
        [ProcessSpec("sleeper", [PY, "-c", SLEEPER])], Backoff(initial=30)
    ) as sup:
        await _until(lambda: "sleeper up" in "".join(sup.tails["sleeper"]), 10, "sleeper up")
        os.kill(_running(sup, "sleeper"), signal.SIGKILL)
        await _until(lambda: "restarting it in 30s" in capsys.readouterr().out, 5, "the backoff")
        started = time.monotonic()
    assert time.monotonic() - started < 5  # did not wait out the 30 s
    assert "restarted sleeper" not in capsys.readouterr().out
    assert len(sup.running) == 1
    assert sup.running[0].restarts == 0


# run_foreground as `up` runs it, in a process of its own (it handles SIGINT and SIGTERM).
DRIVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from snapshoe.supervisor import Backoff, ProcessSpec, run_foreground

    stages = [[ProcessSpec(n, a) for n, a in stage] for stage in json.loads(sys.argv[1])]
    never_ready = set(json.loads(sys.argv[2]))

    async def ready(spec):
        return spec.name not in never_ready

    sys.exit(asyncio.run(run_foreground(
        stages, ready, budget=20, ready_message="all up", backoff=Backoff(initial=0.2),
    )))
    """
)


def _foreground(
    stages: list[list[tuple[str, list[str]]]], never_ready: list[str]
) -> subprocess.Popen[str]:
    import json

    return subprocess.Popen(
        [PY, "-c", DRIVER, json.dumps(stages), json.dumps(never_ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,
    )


def _pids(log: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"(?:started|restarted) {name} \(pid (\d+)", log)]


def test_a_child_that_dies_during_start_up_still_stops_everything() -> None:
    """Start-up is unchanged: the second stage's child dies before it is ready, so up stops
    the first stage too, names it with its last lines and exits 1; nothing is restarted."""
    dies = "import sys; print('cannot bind: address already in use', flush=True); sys.exit(2)"
    proc = _foreground([[("first", [PY, "-c", SLEEPER])], [("dies", [PY, "-c", dies])]], ["dies"])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    failure = out[out.index("start-up failed:") :]
    assert failure.startswith("start-up failed: dies exited with 2 during start-up"), out
    assert "dies | cannot bind: address already in use" in failure
    assert "all processes stopped" in out
    assert "restart" not in out
    assert [p for p in _pids(out, "first") + _pids(out, "dies") if _alive(p)] == []


def _read_until(proc: subprocess.Popen[str], out: str, wanted: Callable[[str], object]) -> str:
    assert proc.stdout is not None
    while not wanted(out):
        line = proc.stdout.readline()
        assert line, out  # it ended
        out += line
    return out


def test_sigterm_after_restarts_stops_everything_and_exits_0() -> None:
    """After start-up a crashed child comes back (twice here), and SIGTERM then stops every
    process, the restarted one too, restarts nothing more, and exits 0."""
    proc = _foreground([[("a", [PY, "-c", SLEEPER])], [("b", [PY, "-c", SLEEPER])]], [])
    try:
        out = _read_until(proc, "", lambda o: "all up" in o)
        for n in (1, 2):
            os.kill(_pids(out, "b")[-1], signal.SIGKILL)
            out = _read_until(
                proc, out, re.compile(rf"restarted b \(pid \d+, restart {n}\)").search
            )
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        out += rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    assert out.count("restarted b") == 2
    assert "restarted a" not in out
    assert "all processes stopped" in out
    assert "restart" not in out[out.index("all processes stopped") :]
    assert [p for p in _pids(out, "a") + _pids(out, "b") if _alive(p)] == [], out
