"""What the HAProxy gateway adds per request, measured with wrk in one run.

Three scenarios against the same trivial upstream (a plain Starlette route on uvicorn, one
worker, uvloop + httptools, no access log), alternated run by run so machine noise hits all
of them alike:

- ``direct``: wrk -> upstream ``GET /api/orders/ping``
- ``gateway_jwt``: wrk -> HAProxy (the real rendered local config) with an ES256 bearer token
  -> JWT checks (alg, typ, kid, iss, aud, exp, nbf, signature) -> upstream
- ``gateway_public``: wrk -> HAProxy -> upstream on a public route (``GET /api/products/ping``),
  to split the proxy hop from the JWT verification

Run: ``uv run python -m snapshoe.bench.gateway_overhead [--runs 3] [--duration 10]
[--connections 64]``.
Prints a Markdown table of the medians (req/s, average, p50 and p99 latency).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from snapshoe.bench.http import TRANSPORT_ERRORS, fetch_sync
from snapshoe.gateway import haproxy_command, write_config
from snapshoe.kernel.auth import TokenIssuer, ensure_dev_keys, load_private_key
from snapshoe.kernel.settings import Settings


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def upstream() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", ping)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited")
        try:
            fetch_sync("GET", url, seconds=1)
            return
        except TRANSPORT_ERRORS:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, args: argparse.Namespace, headers: list[str], gw_pid: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cpu_before = cpu_seconds(gw_pid)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    gw_cpu = cpu_seconds(gw_pid) - cpu_before
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    avg = re.search(r"^\s+Latency\s+(\S+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (avg and p50 and p99 and rps and total):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "avg": _ms(avg.group(1)),
        "p50": _ms(p50.group(1)),
        "p99": _ms(p99.group(1)),
        # HAProxy's own CPU per request: robust to noise from other work on the machine.
        "gw_cpu_us": gw_cpu * 1e6 / int(total.group(1)),
    }


def isolated_settings(tmp: str) -> tuple[Settings, int]:
    """Settings of a gateway of its own whose every service route goes to one stub ``port``."""
    port = free_port()
    settings = Settings(
        data_dir=Path(tmp),
        gateway_port=free_port(),
        gateway_stats_port=free_port(),
        users_port=port,
        products_port=port,
        orders_port=port,
        payments_port=port,
        sandbox_pg_port=port,
    )
    return settings, port


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    """The stub service (``upstream`` below) under uvicorn, as the services run."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "snapshoe.bench.gateway_overhead:upstream",
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        env={**os.environ},
    )


def run_scenarios(
    args: argparse.Namespace, settings: Settings, port: int, token: str, gw_pid: int
) -> dict[str, list[dict[str, float]]]:
    """Alternating wrk runs of: the stub direct, through the gateway with a JWT, without."""
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    scenarios = {
        "direct": (f"http://127.0.0.1:{port}/api/orders/ping", []),
        "gateway_jwt": (
            f"{gateway}/api/orders/ping",
            [f"Authorization: Bearer {token}"],
        ),
        "gateway_public": (f"{gateway}/api/products/ping", []),
    }
    # Sanity: the JWT route really checks (no token -> 401), and the token passes.
    jwt_url = scenarios["gateway_jwt"][0]
    assert fetch_sync("GET", jwt_url, seconds=5).status == 401
    ok = fetch_sync("GET", jwt_url, seconds=5, headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200, ok.text
    results: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
    for run in range(args.runs):
        for name, (url, headers) in scenarios.items():
            r = wrk(url, args, headers, gw_pid)
            results[name].append(r)
            print(f"run {run + 1} {name}: {r}", file=sys.stderr)
    return results


def print_table(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.runs} alternating runs each, medians; {os.cpu_count()} cores\n"
    )
    print("| scenario | req/s | avg latency | p50 | p99 | HAProxy CPU per request |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {name} | {med['rps']:,.0f} | {med['avg']:.2f} ms | {med['p50']:.2f} ms "
            f"| {med['p99']:.2f} ms | {med['gw_cpu_us']:.0f} µs |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings, port = isolated_settings(tmp)
        ensure_dev_keys(settings)
        token, _ = TokenIssuer(load_private_key(settings.private_key_path), settings).issue_access(
            "bench-user", email_verified=True
        )
        config = write_config(settings)
        up = start_upstream(port)
        gw = subprocess.Popen(
            haproxy_command(settings, config),
            stdout=subprocess.DEVNULL,  # HAProxy still formats every log line
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/", up)
            wait_for(f"http://127.0.0.1:{settings.gateway_stats_port}/healthz", gw)
            results = run_scenarios(args, settings, port, token, gw.pid)
        finally:
            gw.terminate()
            up.terminate()
            gw.wait(10)
            up.wait(10)
    print_table(args, results)


if __name__ == "__main__":
    main()
