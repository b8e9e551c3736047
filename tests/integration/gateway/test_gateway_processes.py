"""Several gateway processes on one port, as `snapshoe up` starts them
(SNAPSHOE_GATEWAY_PROCESSES): the same specs and supervisor, the real rendered config. Which
process holds a connection is read from /proc: the accepted socket is among that pid's fds."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.gateway.conftest import Gateway, fresh_address, gateway_test_settings

from snapshoe.cli import _gateway_specs
from snapshoe.gateway import check_config, write_config
from snapshoe.kernel.settings import Settings
from snapshoe.supervisor import Supervisor

ESTABLISHED, LISTEN = "01", "0A"
REQUEST = b"GET /api/products HTTP/1.1\r\nHost: gw\r\n\r\n"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets whose local port is ``port``, in ``state``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(int(fields[9]))
    return found


def held_per_pid(pids: list[int], port: int) -> dict[int, int]:
    established = tcp_inodes(port, ESTABLISHED)
    return {pid: len(socket_inodes(pid) & established) for pid in pids}


@asynccontextmanager
async def gateway_processes(settings: Settings) -> AsyncIterator[list[int]]:
    """The gateway stage of `snapshoe up` for ``settings``, until every process listens."""
    config = write_config(settings)
    check_config(config)
    supervisor = Supervisor(_gateway_specs(settings, config))
    await supervisor.start()
    try:
        pids = [r.proc.pid for r in supervisor.running]
        deadline = time.monotonic() + 10
        while any(not socket_inodes(p) & tcp_inodes(settings.gateway_port, LISTEN) for p in pids):
            assert all(r.proc.returncode is None for r in supervisor.running), "haproxy exited"
            assert time.monotonic() < deadline, "a gateway process never listened"
            await asyncio.sleep(0.05)
        yield pids
    finally:
        await supervisor.stop()


async def open_answered(port: int, ip: str, count: int) -> list[Connection]:
    """Up to ``count`` keep-alive connections from ``ip``, each kept only once answered 200."""
    kept = []
    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
            writer.write(REQUEST)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError):
            continue  # reset at accept or closed unanswered: the per-address cap
        assert head.startswith(b"HTTP/1.1 200 "), head
        kept.append((reader, writer))
    return kept


def close(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()


def settings_for_test(gateway: Gateway, tmp_path: Path, **overrides: Any) -> Settings:
    return gateway_test_settings(tmp_path / "gw", gateway.settings.users_port, **overrides)


@pytest.mark.parametrize("processes", [1, 2])
async def test_every_gateway_process_accepts_connections_on_the_one_port(
    gateway: Gateway, tmp_path: Path, processes: int
) -> None:
    settings = settings_for_test(gateway, tmp_path, gateway_processes=processes)
    async with gateway_processes(settings) as pids:
        assert len(pids) == processes
        held = await open_answered(settings.gateway_port, fresh_address(), 60)
        try:
            assert len(held) == 60
            per_pid = held_per_pid(pids, settings.gateway_port)
        finally:
            close(held)
    # Each connection is in exactly one process; with two, the kernel gave each a share
    # (all 60 on one of two would happen once in 2**59 runs).
    assert sum(per_pid.values()) == 60, per_pid
    assert all(n > 0 for n in per_pid.values()), per_pid


async def test_each_process_counts_an_address_on_its_own(gateway: Gateway, tmp_path: Path) -> None:
    """The per-address cap is a stick table in each process, like the rate limits: with two
    processes one address keeps more than the cap, and never more than twice it."""
    cap = 5
    settings = settings_for_test(
        gateway, tmp_path, gateway_processes=2, gateway_max_connections_per_client=cap
    )
    async with gateway_processes(settings):
        flooder = fresh_address()
        held = await open_answered(settings.gateway_port, flooder, 30)
        try:
            assert cap < len(held) <= 2 * cap, len(held)
            async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(local_address=fresh_address()),
                base_url=f"http://127.0.0.1:{settings.gateway_port}",
            ) as other:
                assert (await other.get("/api/products")).status_code == 200
        finally:
            close(held)


async def test_the_largest_maxconn_starts_under_the_fd_limit(
    gateway: Gateway, tmp_path: Path
) -> None:
    """HAProxy asks for about 2 x maxconn fds at start and refuses to start when the process
    limit (20,000 here, not raisable) is lower: the setting's bound must fit."""
    limit = 9500
    settings = settings_for_test(gateway, tmp_path, gateway_maxconn=limit)
    async with gateway_processes(settings) as pids:
        limits = Path(f"/proc/{pids[0]}/limits").read_text()
        soft = next(line.split()[3] for line in limits.splitlines() if "open files" in line)
        assert int(soft) >= 2 * limit
        held = await open_answered(settings.gateway_port, fresh_address(), 1)
        assert len(held) == 1
        close(held)
