"""The operator commands' client of the platform's admin API, through the gateway (aiohttp).

Who it is: a short-lived admin access token minted with the platform's JWT signing key (the
key file in settings; an operator on the platform's host holds it), for a dedicated subject
``operator-cli:<os user>@<host>``, valid :data:`TOKEN_TTL_SECONDS`, minted again when it runs
out. No password on the command line. Every token minted and every call made with it is
appended to the audit log, ``<SNAPSHOE_DATA_DIR>/admin-audit.log`` (JSON lines: time, subject,
token id, command line, then method, path, status and the gateway's request id per call); a
command whose audit line cannot be written does not run (docs/operations.md, "Commands during
and after a drop").
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import jwt

from snapshoe.kernel.settings import Settings

TOKEN_TTL_SECONDS = 300
SUBJECT_PREFIX = "operator-cli"
REQUEST_SECONDS = 30.0


class AdminApiError(Exception):
    """A problem answer of the admin API (or the gateway), or the platform not answering."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body if isinstance(body, dict) else {}


class AuditError(Exception):
    """The audit log cannot be written, or the signing key read: the command must not run."""


def operator_subject() -> str:
    return f"{SUBJECT_PREFIX}:{getpass.getuser()}@{socket.gethostname()}"


def audit_path(settings: Settings) -> Path:
    return settings.data_dir / "admin-audit.log"


def audit(settings: Settings, record: dict[str, Any]) -> None:
    line = {"time": datetime.now(UTC).isoformat(), "pid": os.getpid(), **record}
    path = audit_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
    except OSError as exc:
        raise AuditError(f"cannot write the audit log {path}: {exc}") from exc


def mint_admin_token(settings: Settings, ttl: int = TOKEN_TTL_SECONDS) -> tuple[str, float]:
    """An admin access token for the operator's subject, and when it expires (epoch s)."""
    from snapshoe.kernel.auth import TokenIssuer, load_private_key

    path = settings.private_key_path
    try:
        key = load_private_key(path)
    except (OSError, ValueError) as exc:
        raise AuditError(
            f"cannot read the JWT signing key {path} (SNAPSHOE_JWT_PRIVATE_KEY_FILE): the "
            f"operator commands mint their admin token with it; run them where it is ({exc})"
        ) from exc
    short = settings.model_copy(update={"access_token_ttl_seconds": ttl})
    subject = operator_subject()
    token, _ = TokenIssuer(key, short).issue_access(subject, email_verified=True, roles=["admin"])
    claims = jwt.decode(token, options={"verify_signature": False})
    audit(
        settings,
        {
            "event": "admin_token_minted",
            "subject": subject,
            "jti": claims["jti"],
            "expires": claims["exp"],
            "argv": sys.argv,
        },
    )
    return token, float(claims["exp"])


def _problem(status: int, body: Any, text: str) -> AdminApiError:
    if isinstance(body, dict) and "code" in body:
        detail = str(body.get("detail") or body.get("title") or "")
        return AdminApiError(status, str(body["code"]), detail, body)
    return AdminApiError(status, "http_error", text[:200] or f"HTTP {status}", body)


class AdminClient:
    """``async with AdminClient(settings) as admin: await admin.get("/api/admin/orders")``."""

    def __init__(self, settings: Settings, base_url: str | None = None) -> None:
        self.settings = settings
        self.base_url = (base_url or settings.gateway_url).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._expires = 0.0
        self._jti = ""

    async def __aenter__(self) -> AdminClient:
        timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _auth(self) -> dict[str, str]:
        if self._token is None or self._expires - time.time() < 30:
            self._token, self._expires = mint_admin_token(self.settings)
            self._jti = jwt.decode(self._token, options={"verify_signature": False})["jti"]
        return {"Authorization": f"Bearer {self._token}"}

    async def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer of a 2xx; :class:`AdminApiError` otherwise."""
        assert self._session is not None, "use AdminClient in 'async with'"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = f"{self.base_url}{path}"
        status, request_id, text, failure = 0, None, "", None
        try:
            async with self._session.request(method, url, params=query, headers=self._auth()) as r:
                text = await r.text()
                status, request_id = r.status, r.headers.get("X-Request-Id")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = exc
        audit(
            self.settings,
            {
                "event": "admin_call",
                "jti": self._jti,
                "method": method,
                "path": path,
                "params": query,
                "status": status,
                "request_id": request_id,
            },
        )
        if failure is not None:
            why = str(failure) or type(failure).__name__
            raise AdminApiError(0, "unreachable", f"{url}: {why}") from failure
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if status >= 300:
            raise _problem(status, body, text)
        return body

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self.request("GET", path, params)

    async def post(self, path: str) -> Any:
        return await self.request("POST", path)

    async def orders(
        self,
        params: dict[str, Any],
        limit: int | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``GET /api/admin/orders`` page after page (100 a page), newest first, until
        ``limit`` orders (None: all); the orders and the cursor of what is left (or None).
        ``on_page(n)`` is told each page's count (for a progress bar)."""
        found: list[dict[str, Any]] = []
        cursor = None
        while limit is None or len(found) < limit:
            size = 100 if limit is None else min(100, limit - len(found))
            page = await self.get("/api/admin/orders", {**params, "limit": size, "cursor": cursor})
            found += page["items"]
            cursor = page["next_cursor"]
            if on_page is not None:
                on_page(len(page["items"]))
            if cursor is None:
                break
        return found, cursor

    async def metrics(self, service: str) -> str | None:
        """A service's own ``/metrics`` text (not through the gateway, no token), or None."""
        assert self._session is not None
        try:
            async with self._session.get(
                f"{self.settings.service_url(service)}/metrics",
                timeout=aiohttp.ClientTimeout(total=5),
            ) as r:
                return await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None
