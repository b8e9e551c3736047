"""Browser sessions, kept server-side in Redis: the cookie holds only a random id (HttpOnly,
SameSite=Lax, Secure outside dev), and the API tokens never reach the browser, so no script on
the page can read them (no localStorage). A session is also where the CSRF token lives
(csrf.py) and the buyer's language. A new id is issued at sign-in (no session fixation)."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

COOKIE = "snapshoe_session"
LANG_COOKIE = "snapshoe_lang"


@dataclass
class Session:
    id: str
    csrf: str
    lang: str = "ko"
    access_token: str | None = None
    refresh_token: str | None = None
    access_expires_at: float = 0.0
    user: dict[str, Any] | None = None
    # Messages shown once on the next page ("paid", "cancelled").
    flash: list[str] = field(default_factory=list)
    # What the buyer was doing when a sign-in was asked for.
    next_path: str | None = None
    new: bool = False
    dirty: bool = False

    @property
    def signed_in(self) -> bool:
        return self.refresh_token is not None

    @property
    def is_admin(self) -> bool:
        return bool(self.user and "admin" in self.user.get("roles", []))

    def sign_in(self, tokens: dict[str, Any], user: dict[str, Any]) -> None:
        self.id = new_id()  # a fresh id: one planted before sign-in is worth nothing after
        self.csrf = new_id()
        self.set_tokens(tokens)
        self.user = user
        self.new = self.dirty = True

    def set_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token = str(tokens["access_token"])
        self.refresh_token = str(tokens["refresh_token"])
        # Refreshed a little early so a request never carries a token that expires in flight.
        self.access_expires_at = time.time() + int(tokens.get("expires_in", 60)) - 20
        self.dirty = True

    def sign_out(self) -> None:
        self.access_token = self.refresh_token = None
        self.user = None
        self.access_expires_at = 0.0
        self.dirty = True


def new_id() -> str:
    return secrets.token_urlsafe(32)


_STORED = (
    "csrf",
    "lang",
    "access_token",
    "refresh_token",
    "access_expires_at",
    "user",
    "flash",
    "next_path",
)


class SessionStore:
    def __init__(self, redis: Redis, namespace: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:web:session:"
        self.ttl = ttl_seconds

    async def load(self, sid: str | None, lang: str) -> Session:
        if sid and len(sid) < 100:
            raw = await self.redis.get(self.prefix + sid)
            if raw is not None:
                data = orjson.loads(raw)
                return Session(id=sid, **{k: data[k] for k in _STORED if k in data})
        return Session(id=new_id(), csrf=new_id(), lang=lang, new=True, dirty=True)

    async def save(self, session: Session, old_id: str | None = None) -> None:
        data = {k: v for k, v in asdict(session).items() if k in _STORED}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.prefix + session.id, orjson.dumps(data), ex=self.ttl)
            if old_id and old_id != session.id:
                pipe.delete(self.prefix + old_id)
            await pipe.execute()

    async def delete(self, sid: str) -> None:
        await self.redis.delete(self.prefix + sid)
