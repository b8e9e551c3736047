"""``snapshoe tracing sample [RATIO | --reset]``: the share of traces every process records,
changed while the platform runs (during a drop, say), without a restart. It is a Redis key
each process with tracing on reads every second (``kernel.tracing.follow_sample_ratio``);
``--reset`` goes back to ``SNAPSHOE_TRACE_SAMPLE_RATIO``. Nothing changes in a platform
started without ``SNAPSHOE_OTLP_ENDPOINT`` (nothing is traced there)."""

from __future__ import annotations

from typing import Annotated

import typer

from snapshoe.cli.apps import app
from snapshoe.cli.common import run
from snapshoe.kernel.settings import get_settings

tracing_app = typer.Typer(help="Tracing: the live sample ratio.", no_args_is_help=True)
app.add_typer(tracing_app, name="tracing")


@tracing_app.command("sample")
def sample(
    ratio: Annotated[
        float | None,
        typer.Argument(min=0.0, max=1.0, help="share of traces to record, 0 to 1"),
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="back to the configured ratio")] = False,
) -> None:
    """Set (or show) the trace sample ratio of every process."""
    from redis.asyncio import Redis

    from snapshoe.kernel.tracing import sample_ratio_key

    settings = get_settings()
    key = sample_ratio_key(settings)

    async def go() -> str:
        client = Redis.from_url(settings.redis_url)
        try:
            if reset:
                await client.delete(key)
            elif ratio is not None:
                await client.set(key, repr(ratio))
            raw = await client.get(key)
        finally:
            await client.aclose()
        if raw is None:
            return f"trace sample ratio: {settings.trace_sample_ratio} (configured)"
        return f"trace sample ratio: {float(raw)} (set live; --reset to go back)"

    typer.echo(run(go()))
    if not settings.otlp_endpoint:
        typer.echo(
            "note: SNAPSHOE_OTLP_ENDPOINT is not set here; a platform without it traces nothing"
        )
