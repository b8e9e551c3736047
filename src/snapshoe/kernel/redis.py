"""Redis client construction. Keys are prefixed by the namespace so a test run and a dev
platform can share one server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from snapshoe.kernel.batching import GroupCommit
from snapshoe.kernel.settings import Settings

ScriptCall = tuple[AsyncScript, Sequence[Any], Sequence[Any]]


def run_id_of(info: str) -> str | None:
    for line in info.splitlines():
        if line.startswith("run_id:"):
            return line.removeprefix("run_id:").strip()
    return None


def create_redis(settings: Settings, *, on_run_id: Callable[[str], None] | None = None) -> Redis:
    """``on_run_id``: told the server's run id (INFO server) on every new connection, before
    that connection's first command: a restarted or failed-over Redis is a new run id."""
    extra: dict[str, Any] = {}
    if on_run_id is not None:

        async def connected(conn: AbstractConnection) -> None:
            await conn.on_connect()
            await conn.send_command("INFO", "server")
            raw = await conn.read_response()
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            if (run_id := run_id_of(text)) is not None:
                on_run_id(run_id)

        extra["redis_connect_func"] = connected
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
        **extra,
    )
    return Redis(connection_pool=pool)


def key(settings: Settings, *parts: str | int) -> str:
    return ":".join([settings.namespace, *(str(p) for p in parts)])


class ScriptPipeline:
    """Runs registered Lua scripts for many concurrent callers in shared pipelines.

    Under a drop every orders request makes one idempotency script call. Alone, each call
    takes a pooled connection, writes, reads and gives the connection back, and redis-py's
    Python around that cost more than Redis itself. Calls that arrive while a pipeline is on
    the wire go together in the next one (kernel.batching.GroupCommit): one connection, one
    write, one read of all replies. Each script is still atomic on its own; a pipeline is not
    a transaction, and no caller needs it to be. A lone call is sent as it always was.
    """

    def __init__(self, redis: Redis, *, pipelines: int = 4, max_batch: int = 128) -> None:
        self._redis = redis
        self._batches: GroupCommit[ScriptCall, Any] = GroupCommit(
            "redis_scripts", self._run, writers=pipelines, max_batch=max_batch
        )

    async def __call__(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        self._batches.start()  # on the first call: needs the running loop
        return await self._batches.submit((script, keys, args))

    async def aclose(self) -> None:
        await self._batches.close()

    async def _run(self, calls: list[ScriptCall]) -> list[Any]:
        if len(calls) == 1:
            script, keys, args = calls[0]
            try:
                return [await script(keys=keys, args=args)]
            except Exception as exc:  # this caller's own error
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                # Redis restarted or the scripts were flushed: nothing ran for this call. The
                # script object loads itself again (EVALSHA, then SCRIPT LOAD on NOSCRIPT).
                script, keys, args = calls[i]
                try:
                    results[i] = await script(keys=keys, args=args)
                except Exception as exc:
                    results[i] = exc
        return results
