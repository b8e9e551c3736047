"""The sandbox PG as a real server for tests: ``snapshoe serve sandbox_pg`` (uvicorn with
uvloop and httptools, as ``snapshoe up`` runs it) in a subprocess, on a free port, in its own
namespace of the test Redis db, plus a tiny webhook receiver.

Its own namespace (not the platform's ``snapshoe_test``) keeps the knobs these tests turn away
from a platform running in the same test session.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from tests.support.net import free_port
from tests.support.platform import ROOT

from snapshoe.kernel.settings import Settings

SECRET = "test_sk_sandbox_pg_tests"
REDIS_URL = "redis://127.0.0.1:6379/15"


def basic(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


def flush_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{namespace}:sandbox_pg:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class WebhookReceiver:
    """Collects POSTed JSON bodies; answers 200. Enough HTTP/1.1 for one request a connection."""

    port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/pg"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            self.events.append(orjson.loads(body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching webhook within {timeout}s: {self.events}")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class SandboxServer:
    def __init__(self, namespace: str, port: int | None = None, **env: str) -> None:
        self.namespace = namespace
        self.port = port or free_port()
        self.env = {
            "SNAPSHOE_NAMESPACE": namespace,
            "SNAPSHOE_SANDBOX_PG_PORT": str(self.port),
            "SNAPSHOE_REDIS_URL": REDIS_URL,
            "SNAPSHOE_PG_SECRET_KEY": SECRET,
            "SNAPSHOE_HTTP_WORKERS": "1",
            "SNAPSHOE_LOG_LEVEL": "WARNING",
            **env,
        }
        self.settings = Settings(
            namespace=namespace,
            sandbox_pg_port=self.port,
            redis_url=REDIS_URL,
            pg_secret_key=SECRET,
        )
        self.url = self.settings.service_url("sandbox_pg")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / ".snapshoe" / "test" / f"sandbox_pg-{self.port}.log"

    def start(self, timeout: float = 90) -> None:
        # Generous: on a machine busy with other test runs, importing the app alone took 40 s.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snapshoe.cli", "serve", "sandbox_pg"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sandbox_pg did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")
