"""Running the platform: ``doctor``, ``migrate``, ``seed``, ``serve``, ``worker`` and ``up``."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from snapshoe.cli.common import has_module, run, start_settings
from snapshoe.kernel.metrics import multiprocess_env, prepare_serve, serve_worker_metrics
from snapshoe.kernel.settings import SERVICES, Settings, get_settings

HTTP_APPS = ("users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "web")
# Processes of a service's app with a job of their own, on a port of their own: name -> app.
ROLE_APPS = {"products_streams": "products"}
# Dev stand-ins with one listening SMTP socket or per-process knobs: never forked.
SINGLE_PROCESS = ("sandbox_pg", "mail_sink")


def _migratable() -> list[str]:
    return [s for s in SERVICES if has_module(f"snapshoe.{s}.migrations")]


def doctor() -> None:
    """Check MariaDB, Redis, RabbitMQ and HAProxy; say how to start what is missing."""
    from snapshoe.doctor import run_checks

    settings = get_settings()
    checks = run(run_checks(settings))
    typer.echo("snapshoe doctor:")
    for check in checks:
        typer.echo(check.line())
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def migrate() -> None:
    """Create each service's database and upgrade it to the latest migration."""
    from snapshoe.kernel.messaging import declare_queues
    from snapshoe.kernel.migrate import migrate_service

    settings = start_settings("migrate")

    async def go() -> None:
        for service in _migratable():
            await migrate_service(settings, service)
            typer.echo(f"migrated {settings.database_name(service)}")
        for service in SERVICES:
            if has_module(f"snapshoe.{service}.consumers"):
                queues = importlib.import_module(f"snapshoe.{service}.consumers").QUEUES
                await declare_queues(settings, queues)
                typer.echo(f"declared queues of {service}: {', '.join(queues)}")

    run(go())


def seed() -> None:
    """Create the demo catalog (idempotent)."""
    settings = get_settings()
    if not has_module("snapshoe.products.seed"):
        typer.echo("no demo data to seed yet")
        return
    module = importlib.import_module("snapshoe.products.seed")
    run(module.seed(settings))
    typer.echo("seeded the demo catalog")


def serve(
    service: Annotated[str, typer.Argument(help="|".join([*HTTP_APPS, *ROLE_APPS]))],
    workers: Annotated[
        int | None, typer.Option(help="processes; default SNAPSHOE_HTTP_WORKERS")
    ] = None,
) -> None:
    """Run one service's HTTP app (uvicorn with uvloop and httptools)."""
    if service not in HTTP_APPS and service not in ROLE_APPS:
        raise typer.BadParameter(f"unknown service {service!r}")
    settings = start_settings(ROLE_APPS.get(service, service))

    import uvicorn

    default = settings.products_stream_workers if service == "products_streams" else 0
    n = workers if workers is not None else default or settings.http_workers
    n = n or (os.cpu_count() or 1)
    n = 1 if service in SINGLE_PROCESS else n
    prepare_serve(settings, service, n)
    uvicorn.run(
        f"snapshoe.{ROLE_APPS.get(service, service)}.bootstrap:create_app",
        factory=True,
        host=settings.host,
        port=settings.service_port(service),
        workers=n if n > 1 else None,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        # Client addresses matter only at the gateway (rate limits, its log); parsing
        # X-Forwarded-For on every request was a visible share of a drop attempt.
        proxy_headers=False,
        backlog=4096,
        timeout_keep_alive=75,  # longer than HAProxy's idle reuse, so pooled conns aren't cut
        timeout_graceful_shutdown=5,
        # uvicorn kills a worker that does not answer its supervisor's ping within this; a
        # worker busy under a crowd (a products process holding 10,000 streams stalled past
        # the default 5 s in bench queue) is not hung, and killing it drops every stream.
        timeout_worker_healthcheck=30,
    )


def worker(service: Annotated[str, typer.Argument(help="service whose workers.py to run")]) -> None:
    """Run a service's background workers (relay, consumers, sweepers) until SIGTERM."""
    import signal

    from snapshoe.kernel.logs import configure_logging
    from snapshoe.kernel.tracing import configure_tracing, follow_sample_ratio

    settings = start_settings(f"{service}-worker")
    configure_logging(f"{service}-worker", settings.log_level, settings.log_json)
    configure_tracing(f"{service}-worker", settings)
    serve_worker_metrics(settings)
    module = importlib.import_module(f"snapshoe.{service}.workers")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        follower = asyncio.create_task(follow_sample_ratio(settings, stop))
        await module.run(settings, stop)
        stop.set()
        await follower

    run(go())


def _process_stages(settings: Settings, config_path: Path) -> list[list[Any]]:
    """What `up` runs, in order: the dev peers, users and products (which nothing else needs at
    start), orders and payments (which call them), the gateway last (it would answer 503
    before). Each worker starts with its service: one started after the services was still
    importing when a test's first payment arrived (its event waited past the payment window)."""
    from snapshoe.sandbox_pg.settings import SandboxSettings
    from snapshoe.supervisor import ProcessSpec

    me = [sys.executable, "-m", "snapshoe.cli"]
    order = [("mail_sink", "sandbox_pg"), ("users", "products"), ("orders", "payments", "web")]
    stages: list[list[Any]] = []
    for group in order:
        stage = []
        for service in group:
            if not has_module(f"snapshoe.{service}.bootstrap"):
                continue
            env = multiprocess_env(settings, service)  # shared with its worker (kernel.metrics)
            if service == "sandbox_pg" and "webhook_url" not in SandboxSettings().model_fields_set:
                # In dev the sandbox notifies payments like the real PG would (unless told
                # otherwise: an empty SNAPSHOE_SANDBOX_PG_WEBHOOK_URL turns webhooks off).
                webhook = f"{settings.service_url('payments')}/api/payments/webhooks/pg"
                env["SNAPSHOE_SANDBOX_PG_WEBHOOK_URL"] = webhook
            stage.append(ProcessSpec(service, [*me, "serve", service], env))
            if service == "products" and settings.products_stream_workers:
                stage.append(ProcessSpec("products_streams", [*me, "serve", "products_streams"]))
            if service in HTTP_APPS and has_module(f"snapshoe.{service}.workers"):
                stage.append(ProcessSpec(f"{service}-worker", [*me, "worker", service], env))
        stages.append(stage)
    stages.append(_gateway_specs(settings, config_path))
    return [stage for stage in stages if stage]


def _gateway_specs(settings: Settings, config_path: Path) -> list[Any]:
    """SNAPSHOE_GATEWAY_PROCESSES HAProxy processes (gateway, gateway-2, ...) with one config on
    one port: HAProxy binds with SO_REUSEPORT, so the kernel spreads connections over them and
    each process brings its own 20,000 fds (docs/gateway.md, "Holding a crowd of streams")."""
    from snapshoe.gateway import haproxy_command
    from snapshoe.gateway.settings import GatewaySettings
    from snapshoe.kernel.settings import settings_for
    from snapshoe.supervisor import ProcessSpec

    count = settings_for(GatewaySettings, settings).gateway_processes
    argv = haproxy_command(settings, config_path)
    return [ProcessSpec(_gateway_name(i), argv) for i in range(1, count + 1)]


def _gateway_name(index: int) -> str:
    return "gateway" if index == 1 else f"gateway-{index}"


def _is_gateway(name: str) -> bool:
    return name == "gateway" or name.startswith("gateway-")


def _readiness(settings: Settings, client: Any) -> Callable[[Any], Awaitable[bool]]:
    """Ready: an HTTP service answers /readyz 200; the gateway routes to products (any of its
    processes may answer: one that cannot bind exits, which fails start-up); a worker is ready
    once started (it has no endpoint; one that dies fails start-up all the same). ``client``
    is an ``aiohttp.ClientSession``."""
    import aiohttp

    async def status(url: str) -> int:
        async with client.get(url) as r:
            return int(r.status)

    async def ready(spec: Any) -> bool:
        try:
            if spec.name in HTTP_APPS or spec.name in ROLE_APPS:
                return await status(f"{settings.service_url(spec.name)}/readyz") == 200
            if _is_gateway(spec.name):
                return await status(f"{settings.gateway_url}/api/products?limit=1") < 500
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    return ready


def _check_before_up(settings: Settings) -> None:
    """Dependencies reachable, ports free, JWT keys present (production) or made (dev)."""
    from snapshoe.doctor import busy_ports, run_checks
    from snapshoe.kernel.auth import ensure_dev_keys

    checks = run(run_checks(settings))
    if not all(c.ok for c in checks):
        typer.echo("snapshoe up: a dependency is missing:", err=True)
        for check in checks:
            typer.echo(check.line(), err=True)
        raise typer.Exit(1)
    busy = busy_ports(settings)
    if busy:
        names = ", ".join(f"{n} {settings.host}:{p}" for n, p in busy)
        typer.echo(f"snapshoe up: ports already in use: {names}", err=True)
        typer.echo(
            "  another 'snapshoe up' may be running; stop it or set SNAPSHOE_*_PORT", err=True
        )
        raise typer.Exit(1)
    if settings.environment == "production":
        # Keys are given in production, never generated (a lost key would log everyone out).
        absent = [
            p for p in (settings.private_key_path, settings.public_key_path) if not p.exists()
        ]
        if absent:
            typer.echo(
                f"snapshoe up: JWT key file(s) missing: {', '.join(map(str, absent))}", err=True
            )
            raise typer.Exit(2)
    elif ensure_dev_keys(settings):
        typer.echo(f"generated dev JWT keys in {settings.private_key_path.parent}")


def up(
    seed_data: Annotated[bool, typer.Option("--seed/--no-seed", help="load demo data")] = True,
) -> None:
    """Start everything in the foreground: gateway, services, workers, mail sink, sandbox PG.
    Once up, a process that dies is restarted with backoff; Ctrl-C stops everything."""
    from snapshoe.gateway import check_config, write_config
    from snapshoe.supervisor import run_foreground

    settings = start_settings("up")
    _check_before_up(settings)
    migrate()
    if seed_data:
        seed()
    config_path = write_config(settings)
    check_config(config_path)
    stages = _process_stages(settings, config_path)

    async def go() -> int:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            return await run_foreground(
                stages,
                _readiness(settings, client),
                budget=settings.startup_timeout_seconds,
                ready_message=f"SnapShoe is up: {settings.gateway_url}  (Ctrl-C stops everything)",
            )

    raise typer.Exit(run(go()))


def register(app: typer.Typer) -> None:
    """The top-level commands, under their function names."""
    for command in (doctor, migrate, seed, serve, worker, up):
        app.command()(command)
