"""`snapshoe up` and `snapshoe doctor` as a user runs them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.platform import (
    ROOT,
    SLOT,
    TEST_ENV,
    Platform,
    make_test_settings,
    reset_state,
    start_platform,
    stop_platform_process,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def dead_redis_port() -> int:
    """A Redis that really ran and was then stopped, so its port refuses connections."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is required for this test")
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if _listening(port):
            break
        time.sleep(0.1)
    assert _listening(port)
    server.send_signal(signal.SIGTERM)
    server.wait(10)
    assert not _listening(port)
    return port


def test_doctor_reports_a_stopped_dependency(dead_redis_port: int) -> None:
    env = {**os.environ, **TEST_ENV, "SNAPSHOE_REDIS_URL": f"redis://127.0.0.1:{dead_redis_port}/0"}
    out = subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert "[FAIL] redis" in out.stdout
    assert "redis-server --daemonize yes" in out.stdout  # says how to start it
    assert "[ok  ] mariadb" in out.stdout
    assert "[ok  ] rabbitmq" in out.stdout


def test_doctor_all_ok() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", "doctor"],
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout


def test_up_fails_fast_when_a_dependency_is_down(dead_redis_port: int) -> None:
    env = {
        **os.environ,
        **TEST_ENV,
        "SNAPSHOE_NAMESPACE": "snapshoe_uptest",
        "SNAPSHOE_REDIS_URL": f"redis://127.0.0.1:{dead_redis_port}/0",
    }
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", "up", "--no-seed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert time.monotonic() - start < 20
    assert "[FAIL] redis" in out.stderr
    assert "redis-server --daemonize yes" in out.stderr


def _second_platform() -> tuple[dict[str, int], dict[str, str]]:
    """Ports and settings of a second platform, apart from the session's and other runs'."""
    # Below 32768: ports in the kernel's ephemeral range can be taken by outgoing connections.
    base = 24000 + SLOT * 200  # apart from the main test platform and other test runs
    ports = {
        "SNAPSHOE_GATEWAY_PORT": base,
        "SNAPSHOE_USERS_PORT": base + 101,
        "SNAPSHOE_PRODUCTS_PORT": base + 102,
        "SNAPSHOE_ORDERS_PORT": base + 103,
        "SNAPSHOE_PAYMENTS_PORT": base + 104,
        "SNAPSHOE_SANDBOX_PG_PORT": base + 105,
        "SNAPSHOE_PRODUCTS_STREAMS_PORT": base + 106,
        "SNAPSHOE_WEB_PORT": base + 107,
        "SNAPSHOE_MAIL_SINK_SMTP_PORT": base + 26,
        "SNAPSHOE_SMTP_PORT": base + 26,
        "SNAPSHOE_MAIL_SINK_HTTP_PORT": base + 25,
        "SNAPSHOE_GATEWAY_STATS_PORT": base + 150,
    }
    namespace = f"snapshoe_uptest{SLOT}"
    # Its databases start empty: ones left by a run of other code (another branch's
    # migrations) would fail this run's migrate for reasons of their own.
    reset_state(make_test_settings(namespace=namespace))
    return ports, {k: str(v) for k, v in ports.items()} | {
        "SNAPSHOE_NAMESPACE": namespace,
        "SNAPSHOE_DATA_DIR": str(ROOT / ".snapshoe" / f"uptest{SLOT}"),
    }


def _run_up(env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", "up", "--no-seed"],
        env={**os.environ, **TEST_ENV, **env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_up_gives_up_at_its_deadline_naming_the_slow_service() -> None:
    """SNAPSHOE_STARTUP_TIMEOUT_SECONDS is up's deadline: past it, up stops everything and
    names what was not ready with its last log lines (issue 12, item 18)."""
    ports, env = _second_platform()
    out = _run_up({**env, "SNAPSHOE_STARTUP_TIMEOUT_SECONDS": "0.5"})
    assert out.returncode == 1, out.stdout[-3000:]
    failure = out.stdout[out.stdout.index("start-up failed:") :]
    assert "not ready after 0.5s (SNAPSHOE_STARTUP_TIMEOUT_SECONDS): mail_sink" in failure
    assert "last log lines:\n    mail_sink | " in failure
    # The first stage only: nothing after it was started.
    assert "started mail_sink" in out.stdout
    assert "started orders" not in out.stdout
    assert "all processes stopped" in out.stdout
    time.sleep(0.5)
    assert [p for p in ports.values() if _listening(p)] == []


def test_up_names_a_service_that_died_with_its_last_log_lines() -> None:
    """A service that cannot start (its port is taken) fails start-up at once, shown with what
    it printed, instead of a wait for the deadline."""
    ports, env = _second_platform()
    blocker = socket.socket()  # bound, not listening: up's busy-port check passes, bind fails
    blocker.bind(("127.0.0.1", ports["SNAPSHOE_MAIL_SINK_HTTP_PORT"]))
    try:
        start = time.monotonic()
        out = _run_up(env)
    finally:
        blocker.close()
    assert out.returncode == 1, out.stdout[-3000:]
    failure = out.stdout[out.stdout.index("start-up failed:") :]
    assert re.match(r"start-up failed: mail_sink exited with [1-9]\d* during start-up", failure)
    assert "its last log lines:\n    mail_sink | " in failure
    assert "address already in use" in failure.lower()
    assert time.monotonic() - start < 170  # not the 180 s deadline


def test_up_starts_and_stops_cleanly() -> None:
    """A second platform on other ports and another namespace: starts, answers through the
    gateway, and on Ctrl-C (SIGINT) exits 0 leaving no process and no listening port."""
    ports, env = _second_platform()
    running = start_platform(env)
    try:
        r = httpx.get(f"http://127.0.0.1:{ports['SNAPSHOE_GATEWAY_PORT']}/api/auth/jwks", timeout=5)
        assert r.status_code == 200
        assert r.json()["keys"][0]["alg"] == "ES256"
        assert all(_listening(p) for p in ports.values())
    finally:
        code = stop_platform_process(running.proc)
    assert code == 0, running.log_path.read_text()[-3000:]
    time.sleep(0.5)
    assert not _group_alive(running.proc.pid)
    lingering = [p for p in ports.values() if _listening(p)]
    assert lingering == [], f"ports still open after stop: {lingering}"
    log = running.log_path.read_text()
    assert "all processes stopped" in log


def _pid_of(log: str, name: str) -> int:
    """The pid up last (re)started ``name`` with, from its log."""
    pids = re.findall(rf"(?:started|restarted) {re.escape(name)} \(pid (\d+)", log)
    assert pids, f"{name} never started:\n{log[-3000:]}"
    return int(pids[-1])


def _answers_again(url: str, within: float) -> float:
    """Seconds until ``url`` answers 200 again, at most ``within``."""
    start = time.monotonic()
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < within, f"{url} not back within {within}s"
        time.sleep(0.2)


def test_up_restarts_a_killed_service_and_gateway_without_a_manual_step() -> None:
    """Issue 18: once up is up, a SIGKILLed child comes back by itself (the same command, a new
    pid) and the platform answers again: orders' /readyz on its own port, then the gateway's
    routes after its HAProxy process is killed too; the log says what happened; Ctrl-C still
    stops everything, the restarted processes too, with exit 0."""
    ports, env = _second_platform()
    running = start_platform(env)
    try:
        log = running.log_path.read_text()
        orders = _pid_of(log, "orders")
        assert (
            httpx.get(f"http://127.0.0.1:{ports['SNAPSHOE_ORDERS_PORT']}/readyz").status_code == 200
        )
        os.kill(orders, signal.SIGKILL)
        _wait_for_log(running.log_path, f"orders (pid {orders}) was killed by SIGKILL (signal 9)")
        back = _answers_again(f"http://127.0.0.1:{ports['SNAPSHOE_ORDERS_PORT']}/readyz", 90)
        log = running.log_path.read_text()
        assert re.search(
            rf"orders \(pid {orders}\) was killed by SIGKILL \(signal 9\) after [\d.]+s up; "
            r"restarting it in 0.5s, at [\d:]+ \(restart 1, crash 1 in a row\); "
            r"its last log lines:\n    orders \| ",
            log,
        ), log[-3000:]
        assert _pid_of(log, "orders") != orders
        assert "restarted orders (pid " in log

        gateway = _pid_of(log, "gateway")
        os.kill(gateway, signal.SIGKILL)
        _wait_for_log(running.log_path, f"gateway (pid {gateway}) was killed by SIGKILL")
        jwks = f"http://127.0.0.1:{ports['SNAPSHOE_GATEWAY_PORT']}/api/auth/jwks"
        gateway_back = _answers_again(jwks, 30)
        log = running.log_path.read_text()
        assert "restarted gateway (pid " in log
        restarted = [_pid_of(log, "orders"), _pid_of(log, "gateway")]
        print(f"orders answered again {back:.1f}s, the gateway {gateway_back:.1f}s after the kill")
    finally:
        code = stop_platform_process(running.proc)
    assert code == 0, running.log_path.read_text()[-3000:]
    time.sleep(0.5)
    assert not _group_alive(running.proc.pid)
    assert [p for p in restarted if _group_alive(p)] == []
    assert [p for p in ports.values() if _listening(p)] == []
    log = running.log_path.read_text()
    assert "restart" not in log[log.index("all processes stopped") :]


def _wait_for_log(path: Path, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"not in the log within {timeout}s: {text}"
        time.sleep(0.1)


def _create_admin(email: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snapshoe.cli",
            "users",
            "create-admin",
            email,
            "--password",
            password,
        ],
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_create_admin_refuses_an_unverified_account(platform: Platform) -> None:
    """Issue 12, item 3: promoting an address nobody proved is refused with a clear message
    and a non-zero exit, and the account keeps its roles; a verified one is promoted."""
    import asyncio
    import secrets as _secrets

    email = f"squatter-{_secrets.token_hex(6)}@example.com"
    password = "correct-Horse-battery-9"
    with httpx.Client(base_url=platform.gateway, timeout=15) as client:
        r = client.post("/api/users", json={"email": email, "password": password, "name": "S"})
        assert r.status_code == 202, r.text
        out = _create_admin(email, "new-admin-Pass-2")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "not verified" in out.stderr
        assert "Traceback" not in out.stderr
        r = client.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        me = client.get(
            "/api/users/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert me.json()["roles"] == []
        assert me.json()["email_verified"] is False

        code = asyncio.run(platform.read_code(email))
        r = client.post("/api/users/verification", json={"email": email, "code": code})
        assert r.status_code == 200, r.text
        out = _create_admin(email, "new-admin-Pass-2")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"admin {email} promoted" in out.stdout
