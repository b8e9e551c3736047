"""The nemesis of ``snapshoe bench drop --faults`` (issue 18): applies each fault of the
schedule at its time after the release, on the run's own platform (``faults_env.FaultEnv``),
and records that it really happened (the evidence: the killed process's new pid, Redis's new
run id, the database's new pid, the broker stopped and started).

Each fault runs in a task of its own (a pause or an outage lasts while the next may start);
whatever a fault breaks is mended in a ``finally`` (SIGCONT, ``start_app``, the database and
Redis started again), even when the run is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshoe.bench.faults_env import FaultEnv, broker_start, rabbitmqctl
from snapshoe.bench.faults_schedule import Fault

RESTART_WAIT_SECONDS = 60.0


@dataclass
class FaultRecord:
    fault: Fault
    started: float | None = None  # seconds after the release, as applied
    ended: float | None = None  # when the nemesis was done (resumed, started again)
    applied: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault.label,
            "at": self.fault.at,
            "action": self.fault.action,
            "target": self.fault.target,
            "seconds": self.fault.seconds,
            "started": self.started,
            "ended": self.ended,
            "applied": self.applied,
            "evidence": self.evidence,
            "error": self.error,
        }


class Nemesis:
    def __init__(self, env: FaultEnv, faults: list[Fault], release_ts: float, log: Any) -> None:
        self.env = env
        self.faults = faults
        self.release_ts = release_ts
        self.log = log
        self.records = [FaultRecord(f) for f in faults]
        # The snapshot a ``redis-stale`` restarts from: the last ``redis-snapshot``'s, or the
        # one taken before the drop was set up (``take_first_snapshot``).
        self.snapshot: Path | None = None

    def now(self) -> float:
        return round(time.time() - self.release_ts, 3)

    def take_first_snapshot(self) -> None:
        assert self.env.redis is not None
        self.snapshot = self.env.redis.snapshot("before-drop.rdb")

    async def run(self) -> list[FaultRecord]:
        tasks = [asyncio.create_task(self._at(r)) for r in self.records]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.records

    async def _at(self, r: FaultRecord) -> None:
        await asyncio.sleep(max(0.0, self.release_ts + r.fault.at - time.time()))
        r.started = self.now()
        self.log(f"nemesis t={r.started:.1f}s: {r.fault.label}")
        try:
            await getattr(self, "_" + r.fault.action.replace("-", "_"))(r)
            r.applied = r.error is None
        except Exception as exc:  # recorded: a fault that could not be applied
            r.error = f"{type(exc).__name__}: {exc}"
            self.log(f"nemesis: {r.fault.label} failed: {r.error}")
        finally:
            r.ended = self.now()

    # Processes

    def _pid(self, name: str) -> int:
        pid = self.env.children().get(name)
        if pid is None:
            raise RuntimeError(
                f"no process {name!r} under snapshoe up ({sorted(self.env.children())})"
            )
        return pid

    async def _kill(self, r: FaultRecord) -> None:
        name = r.fault.target
        assert name is not None
        old = self._pid(name)
        os.killpg(old, signal.SIGKILL)  # its own group: uvicorn's workers with it
        killed = time.monotonic()
        r.evidence["old_pid"] = old
        deadline = killed + RESTART_WAIT_SECONDS
        while time.monotonic() < deadline:
            new = self.env.children().get(name)
            if new is not None and new != old:
                r.evidence["new_pid"] = new
                r.evidence["restarted_after_s"] = round(time.monotonic() - killed, 2)
                return
            await asyncio.sleep(0.1)
        r.error = f"{name} was not restarted within {RESTART_WAIT_SECONDS:g} s"

    async def _pause(self, r: FaultRecord) -> None:
        name = r.fault.target
        assert name is not None
        pid = self._pid(name)
        r.evidence["pid"] = pid
        os.killpg(pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            # The signal is delivered asynchronously: the state reads T once it took.
            for _ in range(100):
                if _state(pid) == "T":
                    break
                await asyncio.sleep(0.01)
            r.evidence["state_paused"] = _state(pid)
            await asyncio.sleep(max(0.0, r.fault.seconds - (time.monotonic() - paused_at)))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
        r.evidence["state_resumed"] = _state(pid)
        r.evidence["same_pid_after"] = self.env.children().get(name) == pid

    # Redis

    async def _redis_snapshot(self, r: FaultRecord) -> None:
        assert self.env.redis is not None
        redis = self.env.redis
        self.snapshot = await asyncio.to_thread(redis.snapshot, f"snap-{r.fault.at:g}.rdb")
        r.evidence["keys"] = redis.dbsize()

    async def _redis_restart(self, r: FaultRecord, snapshot: Path | None) -> None:
        assert self.env.redis is not None
        redis = self.env.redis
        r.evidence["run_id_before"] = redis.info("run_id")
        r.evidence["keys_before"] = redis.dbsize()
        await asyncio.to_thread(redis.restart, from_snapshot=snapshot, down_seconds=r.fault.seconds)
        r.evidence["run_id_after"] = redis.info("run_id")
        r.evidence["keys_after"] = redis.dbsize()
        if r.evidence["run_id_after"] == r.evidence["run_id_before"]:
            r.error = "Redis's run id did not change: it was not restarted"

    async def _redis_empty(self, r: FaultRecord) -> None:
        await self._redis_restart(r, None)

    async def _redis_stale(self, r: FaultRecord) -> None:
        if self.snapshot is None:
            raise RuntimeError("no snapshot to restart Redis from")
        r.evidence["snapshot"] = self.snapshot.name
        await self._redis_restart(r, self.snapshot)

    # The broker and the database

    async def _broker_restart(self, r: FaultRecord) -> None:
        assert self.env.settings is not None
        url = self.env.settings.amqp_url
        self.env.broker_stopped = True
        try:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            r.evidence["stopped_at"] = self.now()
            await asyncio.sleep(r.fault.seconds)
        finally:
            await asyncio.to_thread(broker_start, url)
            self.env.broker_stopped = False
        r.evidence["started_at"] = self.now()

    async def _db_stop(self, r: FaultRecord) -> None:
        db = self.env.db
        assert db is not None
        assert db.proc is not None
        r.evidence["pid_before"] = db.proc.pid
        try:
            await asyncio.to_thread(db.stop)
            r.evidence["stopped_at"] = self.now()
            await asyncio.sleep(
                max(0.0, r.started + r.fault.seconds - self.now()) if r.started else 0
            )
        finally:
            if not db.running():
                await asyncio.to_thread(db.start)
        r.evidence["pid_after"] = db.proc.pid if db.proc else None
        r.evidence["started_at"] = self.now()


def _state(pid: int) -> str | None:
    """The process state letter (``T``: stopped) from /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
