"""Best-effort ``PAYMENT_STATUS_CHANGED`` webhooks, like Toss sends them.

Each event is posted in the background (the API answer never waits for it), tried a few
times with backoff, then dropped with a log line. Receivers must treat it as a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from snapshoe.kernel.clients import pooled_session

log = logging.getLogger("snapshoe.sandbox_pg.webhooks")

ATTEMPTS = 3
CONNECTIONS = 20


class WebhookSender:
    def __init__(self, url: str, timeout: float, http: aiohttp.ClientSession | None = None) -> None:
        self.url = url
        # Each step (connecting, each read) within ``timeout``, as the sender always had it.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._http = http
        self._own_http = http is None
        self._tasks: set[asyncio.Task[None]] = set()
        self.backoff = 0.5

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use, inside the running loop
            self._http = pooled_session(CONNECTIONS, timeout=self.timeout)
        return self._http

    def notify(self, event: dict[str, Any]) -> None:
        task = asyncio.create_task(self._send(event))
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: dict[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.http.post(self.url, json=event, timeout=self.timeout) as r:
                    status = r.status
                    await r.read()
                if status < 300:
                    return
                log.warning("webhook answered %s", status, extra={"attempt": attempt})
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook failed: %r", exc, extra={"attempt": attempt})
            if attempt < ATTEMPTS:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        log.error(
            "webhook dropped after %d attempts",
            ATTEMPTS,
            extra={"payment_key": event.get("data", {}).get("paymentKey")},
        )

    async def drain(self, wait_seconds: float = 2.0) -> None:
        """Wait a little for events in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=wait_seconds)

    async def close(self) -> None:
        await self.drain()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None
