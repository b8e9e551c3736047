"""Redis client construction. Keys are prefixed by the namespace so a test run and a dev
platform can share one server."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from snapshoe.kernel.settings import Settings


def create_redis(settings: Settings) -> Redis:
    # A blocking pool: under a stampede a request waits briefly for a free connection instead
    # of failing with "Too many connections" (the default pool raises at its limit).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
        max_connections=512,
        timeout=5,
    )
    return Redis(connection_pool=pool)


def key(settings: Settings, *parts: str | int) -> str:
    return ":".join([settings.namespace, *(str(p) for p in parts)])
