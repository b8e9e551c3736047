"""``snapshoe bench drop --faults small`` end to end (issue 18): a drop on a platform of its own
(private Redis and MariaDB, ``snapshoe up`` as a subprocess) while the nemesis pauses products,
stops the database and kills the payments worker; then the checker. The test fails on any
anomaly the checker names, and checks that each fault really happened (a new pid, a stopped
process, a new database server)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from snapshoe.bench.faults_run import FaultsConfig, run_faults, summary_lines
from snapshoe.bench.faults_schedule import parse

pytestmark = pytest.mark.slow


async def test_the_small_fault_schedule_leaves_no_anomaly(tmp_path: Path) -> None:
    started = time.monotonic()
    cfg = FaultsConfig(
        schedule="small",
        buyers=300,
        pairs=30,
        sizes=3,
        connections=50,
        decline_share=0.2,
        trickle_per_second=6,
        # Orphan reservations (orders killed between reserve and write) go back at the
        # payment window + 30 s: a short window keeps the run near 4 minutes.
        order_ttl_seconds=60,
        seed=18,
        out=tmp_path / "faults.json",
    )
    result = await run_faults(cfg)
    print("\n".join(summary_lines(result)))

    faults = {f["action"] + (f":{f['target']}" if f["target"] else ""): f for f in result["faults"]}
    assert len(result["faults"]) == len(parse("small"))
    for f in result["faults"]:
        assert f["applied"], f
    # Each fault really happened.
    ev = faults["kill:payments-worker"]["evidence"]
    assert ev["new_pid"] != ev["old_pid"], ev
    pause = faults["pause:products"]["evidence"]
    assert pause["state_paused"] == "T", pause  # stopped, not dead
    assert pause["state_resumed"] != "T"
    assert pause["same_pid_after"] is True
    db = faults["db-stop"]["evidence"]
    assert db["pid_after"] != db["pid_before"], db

    # The checker found nothing, and looked: the drop happened and settled.
    assert result["anomalies"] == [], json.dumps(result["anomalies"], indent=1, default=str)
    assert result["ok"] is True
    assert result["stampede"]["attempts"] > 0
    product = result["checks"]["product"]
    assert product["oversold"] == 0
    assert product["ledger_consistent"] is True
    assert product["pairs_sold"] == product["orders_paid"] > 0
    assert result["checks"]["settled"] is True
    assert result["checks"]["messaging"] == {"undrained_queues": {}, "dead_letters": {}}
    # The platform answered normally again after the last fault (else an anomaly above);
    # per fault, on a loaded machine a restart can outlast the gap to the next fault.
    assert result["probe_rounds"] > 0
    assert Path(result["report"]).read_text().count("<tr") > len(result["faults"])
    assert time.monotonic() - started < 360
