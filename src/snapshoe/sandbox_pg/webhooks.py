"""Best-effort ``PAYMENT_STATUS_CHANGED`` webhooks, like Toss sends them.

Each event is posted in the background (the API answer never waits for it), tried a few
times with backoff, then dropped with a log line. Receivers must treat it as a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

log = logging.getLogger("snapshoe.sandbox_pg.webhooks")

ATTEMPTS = 3


class WebhookSender:
    def __init__(self, url: str, timeout: float, http: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self.backoff = 0.5

    def notify(self, event: dict[str, Any]) -> None:
        task = asyncio.create_task(self._send(event))
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: dict[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                r = await self.http.post(self.url, json=event)
                if r.status_code < 300:
                    return
                log.warning("webhook answered %s", r.status_code, extra={"attempt": attempt})
            except httpx.HTTPError as exc:
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
        await self.http.aclose()
