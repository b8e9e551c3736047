"""``snapshoe``: run, migrate, seed and inspect the platform, and operate a drop.

One job per module: ``apps`` (the command groups), ``platform`` (doctor, migrate, seed, serve,
worker, up), ``accounts``, ``stock`` (gate vs ledger), ``draws``, ``lifecycle``, ``events``
(dead letters), ``bench``, ``operations`` (find and refund orders, outbox status),
``drop_summary``, ``tracing`` (the live sample ratio), and ``admin_client`` (the operator
commands' aiohttp client of the admin API).
Heavy imports (services, aiohttp, rich) happen inside the commands: every process, and each
uvicorn worker, imports this package first (docs/deployment.md).
"""

from __future__ import annotations

from snapshoe.cli import (
    accounts,
    bench,
    draws,
    drop_summary,
    events,
    lifecycle,
    operations,
    stock,
    tracing,
)
from snapshoe.cli import platform as platform_commands
from snapshoe.cli.apps import app
from snapshoe.cli.platform import _gateway_specs, _process_stages, _readiness

platform_commands.register(app)

__all__ = [
    "_gateway_specs",
    "_process_stages",
    "_readiness",
    "accounts",
    "app",
    "bench",
    "draws",
    "drop_summary",
    "events",
    "lifecycle",
    "main",
    "operations",
    "stock",
    "tracing",
]


def main() -> None:
    app()
