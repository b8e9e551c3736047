"""The pure parts of the fault run (bench.faults_workload, bench.faults_check) and its report
(bench.faults_report): how an answer is counted, the per-fault rows from the probes and
answers, the gate anomaly's direction, the throughput bins, and a report rendered from a
result."""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from snapshoe.bench.faults_check import fault_rows, gate_anomaly, throughput
from snapshoe.bench.faults_nemesis import FaultRecord
from snapshoe.bench.faults_report import render
from snapshoe.bench.faults_schedule import Sample, parse
from snapshoe.bench.faults_workload import Record, kind_of, not_final
from snapshoe.bench.http import Response


def response(status: int, body: bytes = b"{}", **headers: str) -> Response:
    h = CIMultiDictProxy(CIMultiDict(headers))
    info = aiohttp.RequestInfo(URL("http://x/"), "POST", h, URL("http://x/"))
    return Response(status, body, h, "http://x/", info)


def test_answers_are_counted_by_status_code_and_retry_after() -> None:
    assert kind_of(None) == "transport"
    assert kind_of(response(201, b'{"id": "o1"}')) == "201"
    assert kind_of(response(409, b'{"code": "sold_out"}')) == "409:sold_out"
    assert kind_of(response(503, b'{"code": "service_unavailable"}', **{"Retry-After": "1"})) == (
        "503:service_unavailable+retry-after"
    )
    assert kind_of(response(502, b"<html>bad gateway</html>")) == "502"


def test_a_client_asks_again_on_no_answer_a_5xx_or_a_key_in_use() -> None:
    assert not_final(None)
    assert not_final(response(503))
    assert not_final(response(409, b'{"code": "idempotency_key_in_use"}'))
    assert not not_final(response(201))
    assert not not_final(response(409, b'{"code": "sold_out"}'))
    assert not not_final(response(402, b'{"code": "payment_declined"}'))


def test_fault_rows_put_probes_and_answers_in_each_faults_window() -> None:
    faults = parse("1:kill:orders,4:db-stop:2")
    records = [
        FaultRecord(faults[0], started=1.0, ended=1.6, applied=True, evidence={"old_pid": 1}),
        FaultRecord(faults[1], started=4.0, ended=6.1, applied=True),
    ]
    rec = Record()
    rec.samples = [
        Sample(0.8, True),
        Sample(1.2, False),
        Sample(1.4, False),
        Sample(2.0, True),
        Sample(4.2, False),
        Sample(6.5, True),
    ]
    rec.answers = [(1.1, "502"), (1.3, "503+retry-after"), (2.5, "201"), (4.5, "transport")]
    rows = fault_rows(records, rec, run_end=10.0)
    assert rows[0]["recovery_seconds"] == 1.0
    assert rows[0]["probe_rounds_not_normal"] == 2
    assert rows[0]["errors_seen"] == {"502": 1, "503+retry-after": 1}
    assert rows[0]["answers"]["201"] == 1
    assert rows[0]["window"] == [1.0, 4.0]
    assert rows[1]["recovery_seconds"] == 2.5
    assert rows[1]["errors_seen"] == {"transport": 1}


def test_gate_anomaly_says_which_way_the_gate_is_off() -> None:
    under = [{"kind": "available", "ledger": 3, "gate": 2}, {"kind": "held", "gate": 1}]
    assert "under-count" in gate_anomaly(under)["anomaly"]
    over = [{"kind": "available", "ledger": 2, "gate": 3}]
    assert "over-count" in gate_anomaly(over)["anomaly"]
    assert gate_anomaly(over)["evidence"] == over


def test_throughput_bins_answers_and_errors() -> None:
    tp = throughput([(0.1, "201"), (0.5, "409:sold_out"), (1.2, "503"), (2.9, "transport")])
    assert tp["t"] == [0.0, 1.0, 2.0]
    assert tp["answered"] == [2, 0, 0]
    assert tp["errors"] == [0, 1, 1]
    assert throughput([]) == {}


def result(anomalies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "started_at": "2026-12-08T00:00:00+00:00",
        "schedule": "1:kill:orders",
        "schedule_name": None,
        "setup": {"buyers_stampede": 300, "pairs": 30, "buyers_late": 100, "git": {}},
        "faults": [
            {
                "fault": "1:kill:orders",
                "started": 1.0,
                "applied": True,
                "recovery_seconds": 2.5,
                "probe_rounds_not_normal": 3,
                "errors_seen": {"502": 4},
                "evidence": {"old_pid": 10, "new_pid": 11},
            }
        ],
        "anomalies": anomalies,
        "answers_total": {"201": 30, "502": 4},
        "throughput": {"bin_seconds": 1.0, "t": [0.0, 1.0], "answered": [10, 5], "errors": [0, 4]},
        "checks": {"product": {"pairs_sold": 30}},
        "ok": not anomalies,
    }


def test_the_report_shows_the_verdict_faults_anomalies_and_the_marked_chart() -> None:
    html = render(result([]))
    assert "✔ OK" in html
    assert "1:kill:orders" in html
    assert "502 ×4" in html
    assert "No anomaly" in html
    assert 'class="marker"' in html  # the fault on the throughput chart
    bad = render(result([{"anomaly": "pairs oversold", "evidence": [{"size": 250}]}]))
    assert "✘ FAILED" in bad
    assert "pairs oversold" in bad
    assert "&quot;size&quot;: 250" in bad
