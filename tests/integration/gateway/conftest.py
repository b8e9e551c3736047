"""A real HAProxy, started from the real rendered config, in front of a tiny echo upstream.

Every backend of the rendered config points at the echo app, which answers with the method,
path and headers it received: what the gateway lets through is exactly what a service would
see. Keys are generated per run; tokens are minted with the kernel's ``TokenIssuer``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from tests.support.net import free_port, fresh_address
from tests.support.settings import PlatformSettings

from snapshoe.gateway import check_config, haproxy_command, write_config
from snapshoe.kernel.auth import TokenIssuer, ensure_dev_keys, load_private_key
from snapshoe.kernel.settings import Settings

LOGIN_RATE = 5
VERIFICATION_RATE = 4
SIGNUP_RATE = 3
PASSWORD_RESET_RATE = 4
QUEUE_JOIN_RATE = 3
DRAW_ENTRY_RATE = 3


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            # As sent on the wire: what the gateway forwarded, before the server decodes it.
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body_bytes": len(body),
        }
    )


async def events(request: Request) -> StreamingResponse:
    """A ticket stream's stand-in: the echo as its first event, then a heartbeat every ``gap``
    seconds (query, default 1), as the products service sends them."""
    gap = float(request.query_params.get("gap", "1"))
    first = (await echo(request)).body

    async def frames() -> AsyncIterator[bytes]:
        yield b"event: echo\ndata: " + bytes(first) + b"\n\n"
        while True:
            await asyncio.sleep(gap)
            yield b": heartbeat\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


def echo_app() -> Starlette:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            # With or without a trailing slash (the gateway routes the two apart).
            Route("/api/products/{pid}/queue/me/events{rest:path}", events, methods=["GET"]),
            Route("/{path:path}", echo, methods=methods),
        ]
    )


@dataclass
class Gateway:
    settings: Settings
    url: str
    stats_url: str
    upstream_url: str
    issuer: TokenIssuer
    private_key: ec.EllipticCurvePrivateKey
    log_path: Path
    config_path: Path

    def client(self, ip: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=ip or fresh_address(), retries=0)
        return httpx.AsyncClient(transport=transport, base_url=self.url, timeout=10)

    def token(self, sub: str = "user-1", verified: bool = True) -> str:
        token, _ = self.issuer.issue_access(sub, email_verified=verified)
        return token


def gateway_test_settings(data_dir: Path, upstream: int, **overrides: Any) -> Settings:
    """Settings for a test gateway in ``data_dir`` whose every backend is ``upstream``."""
    settings = PlatformSettings(
        data_dir=data_dir,
        gateway_port=free_port(),
        gateway_stats_port=free_port(),
        users_port=upstream,
        products_port=upstream,
        orders_port=upstream,
        payments_port=upstream,
        sandbox_pg_port=upstream,
        web_port=upstream,
        login_rate_per_minute=LOGIN_RATE,
        verification_rate_per_minute=VERIFICATION_RATE,
        signup_rate_per_minute=SIGNUP_RATE,
        password_reset_rate_per_minute=PASSWORD_RESET_RATE,
        queue_join_rate_per_minute=QUEUE_JOIN_RATE,
        draw_entry_rate_per_minute=DRAW_ENTRY_RATE,
        jwt_private_key_file=data_dir / "keys" / "private.pem",
        jwt_public_key_file=data_dir / "keys" / "public.pem",
        **overrides,
    )
    ensure_dev_keys(settings)
    return settings


@pytest.fixture(scope="session")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return gateway_test_settings(tmp_path_factory.mktemp("gateway"), free_port())


@pytest.fixture(scope="session")
async def upstream(gateway_settings: Settings) -> AsyncIterator[str]:
    port = gateway_settings.users_port
    server = uvicorn.Server(
        uvicorn.Config(echo_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@contextmanager
def run_haproxy(settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real HAProxy from the config rendered for ``settings``, until the block ends."""
    config = write_config(settings)
    check_config(config)
    log_path = settings.data_dir / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            haproxy_command(settings, config), stdout=log, stderr=subprocess.STDOUT
        )
    stats = f"http://127.0.0.1:{settings.gateway_stats_port}/healthz"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(stats, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"haproxy did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    try:
        yield proc, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def haproxy(gateway_settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    with run_haproxy(gateway_settings) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(
    gateway_settings: Settings,
    upstream: str,
    haproxy: tuple[subprocess.Popen[bytes], Path],
) -> Gateway:
    private_key = load_private_key(gateway_settings.private_key_path)
    return Gateway(
        settings=gateway_settings,
        url=f"http://127.0.0.1:{gateway_settings.gateway_port}",
        stats_url=f"http://127.0.0.1:{gateway_settings.gateway_stats_port}",
        upstream_url=upstream,
        issuer=TokenIssuer(private_key, gateway_settings),
        private_key=private_key,
        log_path=haproxy[1],
        config_path=gateway_settings.data_dir / "haproxy.cfg",
    )
