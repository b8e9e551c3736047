"""The web tier's dependency record (built by bootstrap): its settings, the API client, the
session store and the page templates. Every page module takes it from ``app.state.deps``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.templating import Jinja2Templates
from redis.asyncio import Redis

from snapshoe.web.sessions import SessionStore
from snapshoe.web.settings import WebSettings
from snapshoe.web.upstream import Api


@dataclass
class Deps:
    settings: WebSettings
    redis: Redis
    api: Api
    sessions: SessionStore
    templates: Jinja2Templates
