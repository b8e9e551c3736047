"""``snapshoe orders lifecycle``: the lifecycle worker's status, or the worker alone."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from snapshoe.cli.apps import orders_app
from snapshoe.cli.common import run
from snapshoe.kernel.settings import get_settings


@orders_app.command("lifecycle")
def orders_lifecycle(
    status: Annotated[
        bool, typer.Option("--status", help="due orders per status and how late the oldest is")
    ] = False,
    run_worker: Annotated[
        bool, typer.Option("--run", help="run the lifecycle worker alone until SIGTERM")
    ] = False,
) -> None:
    """The lifecycle worker (expiry, PREPARING -> SHIPPING -> DELIVERED): status or run."""
    import signal

    from snapshoe.kernel.logs import configure_logging
    from snapshoe.kernel.tracing import configure_tracing
    from snapshoe.orders.workers import lifecycle_status, run_lifecycle

    settings = get_settings()
    if status == run_worker:
        raise typer.BadParameter("give one of --status or --run")
    if status:
        typer.echo(run(lifecycle_status(settings)))
        return
    configure_logging("orders-lifecycle", settings.log_level, settings.log_json)
    configure_tracing("orders-lifecycle", settings)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_lifecycle(settings, stop)

    run(go())
