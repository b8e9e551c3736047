"""``snapshoe``: run, migrate, seed and inspect the platform.

Library: Typer (click underneath) for typed sub-commands with generated help.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from snapshoe.kernel.metrics import multiprocess_env, prepare_serve, serve_worker_metrics
from snapshoe.kernel.settings import (
    SERVICES,
    Settings,
    UnsafeSecretsError,
    check_start_secrets,
    get_settings,
)

app = typer.Typer(help="SnapShoe: limited-edition sneaker drops.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
products_app = typer.Typer(help="Catalog and stock.", no_args_is_help=True)
orders_app = typer.Typer(help="Orders.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks against the running platform.", no_args_is_help=True)
draws_app = typer.Typer(
    help="Draws (raffles): check one from what it published.", no_args_is_help=True
)
events_app = typer.Typer(help="Events: dead-letter queues.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Dead-lettered events: list them (nothing consumed) or replay them to their queue.",
    no_args_is_help=True,
)
events_app.add_typer(dlq_app, name="dlq")
app.add_typer(events_app, name="events")
app.add_typer(users_app, name="users")
app.add_typer(products_app, name="products")
app.add_typer(orders_app, name="orders")
app.add_typer(bench_app, name="bench")
app.add_typer(draws_app, name="draws")

HTTP_APPS = ("users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "web")
# Processes of a service's app with a job of their own, on a port of their own: name -> app.
ROLE_APPS = {"products_streams": "products"}
# Dev stand-ins with one listening SMTP socket or per-process knobs: never forked.
SINGLE_PROCESS = ("sandbox_pg", "mail_sink")


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _start_settings(role: str) -> Settings:
    """Settings of a process about to start as ``role``; outside dev and test, a missing or
    public default secret stops it here, with what to set, before it binds or connects."""
    settings = get_settings()
    try:
        check_start_secrets(settings, role)
    except UnsafeSecretsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    return settings


def _migratable() -> list[str]:
    return [s for s in SERVICES if _has_module(f"snapshoe.{s}.migrations")]


@app.command()
def doctor() -> None:
    """Check MariaDB, Redis, RabbitMQ and HAProxy; say how to start what is missing."""
    from snapshoe.doctor import run_checks

    settings = get_settings()
    checks = _run(run_checks(settings))
    typer.echo("snapshoe doctor:")
    for check in checks:
        typer.echo(check.line())
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Create each service's database and upgrade it to the latest migration."""
    from snapshoe.kernel.messaging import declare_queues
    from snapshoe.kernel.migrate import migrate_service

    settings = _start_settings("migrate")

    async def go() -> None:
        for service in _migratable():
            await migrate_service(settings, service)
            typer.echo(f"migrated {settings.database_name(service)}")
        for service in SERVICES:
            if _has_module(f"snapshoe.{service}.consumers"):
                queues = importlib.import_module(f"snapshoe.{service}.consumers").QUEUES
                await declare_queues(settings, queues)
                typer.echo(f"declared queues of {service}: {', '.join(queues)}")

    _run(go())


@app.command()
def seed() -> None:
    """Create the demo catalog (idempotent)."""
    settings = get_settings()
    if not _has_module("snapshoe.products.seed"):
        typer.echo("no demo data to seed yet")
        return
    module = importlib.import_module("snapshoe.products.seed")
    _run(module.seed(settings))
    typer.echo("seeded the demo catalog")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="|".join([*HTTP_APPS, *ROLE_APPS]))],
    workers: Annotated[
        int | None, typer.Option(help="processes; default SNAPSHOE_HTTP_WORKERS")
    ] = None,
) -> None:
    """Run one service's HTTP app (uvicorn with uvloop and httptools)."""
    if service not in HTTP_APPS and service not in ROLE_APPS:
        raise typer.BadParameter(f"unknown service {service!r}")
    settings = _start_settings(ROLE_APPS.get(service, service))

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


@app.command()
def worker(service: Annotated[str, typer.Argument(help="service whose workers.py to run")]) -> None:
    """Run a service's background workers (relay, consumers, sweepers) until SIGTERM."""
    import signal

    from snapshoe.kernel.logs import configure_logging

    settings = _start_settings(f"{service}-worker")
    configure_logging(f"{service}-worker", settings.log_level, settings.log_json)
    serve_worker_metrics(settings)
    module = importlib.import_module(f"snapshoe.{service}.workers")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await module.run(settings, stop)

    _run(go())


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
            if not _has_module(f"snapshoe.{service}.bootstrap"):
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
            if service in HTTP_APPS and _has_module(f"snapshoe.{service}.workers"):
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
    once started (it has no endpoint; one that dies fails start-up all the same)."""
    import httpx

    async def ready(spec: Any) -> bool:
        try:
            if spec.name in HTTP_APPS or spec.name in ROLE_APPS:
                r = await client.get(f"{settings.service_url(spec.name)}/readyz")
                return bool(r.status_code == 200)
            if _is_gateway(spec.name):
                r = await client.get(f"{settings.gateway_url}/api/products?limit=1")
                return bool(r.status_code < 500)
        except httpx.HTTPError:
            return False
        return True

    return ready


@app.command()
def up(
    seed_data: Annotated[bool, typer.Option("--seed/--no-seed", help="load demo data")] = True,
) -> None:
    """Start everything in the foreground: gateway, services, workers, mail sink, sandbox PG."""
    from snapshoe.doctor import busy_ports, run_checks
    from snapshoe.gateway import check_config, write_config
    from snapshoe.kernel.auth import ensure_dev_keys
    from snapshoe.supervisor import run_foreground

    settings = _start_settings("up")
    checks = _run(run_checks(settings))
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
    migrate()
    if seed_data:
        seed()
    config_path = write_config(settings)
    check_config(config_path)
    stages = _process_stages(settings, config_path)

    async def go() -> int:
        import httpx

        async with httpx.AsyncClient(timeout=2) as client:
            return await run_foreground(
                stages,
                _readiness(settings, client),
                budget=settings.startup_timeout_seconds,
                ready_message=f"SnapShoe is up: {settings.gateway_url}  (Ctrl-C stops everything)",
            )

    raise typer.Exit(_run(go()))


@users_app.command("create-admin")
def create_admin(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    name: str = "Admin",
) -> None:
    """Create (or promote) a verified admin account."""
    from snapshoe.users.domain import PolicyError
    from snapshoe.users.handlers import create_admin as create

    settings = get_settings()
    try:
        result = _run(create(settings, email, password, name))
    except PolicyError as exc:
        typer.echo(f"create-admin: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"admin {result.email} {'created' if result.created else 'promoted'}")


@products_app.command("reconcile")
def reconcile() -> None:
    """Check the Redis stock gate against the DB ledger, repair the gate, report differences."""
    from snapshoe.products.workers import reconcile as run_reconcile

    report = _run(run_reconcile(get_settings()))
    typer.echo(str(report))


@draws_app.command("verify")
def draws_verify(
    product_id: str,
    gateway: Annotated[str | None, typer.Option(help="the gateway's URL")] = None,
) -> None:
    """Recompute a published draw: do the seed and the winners check out? (exit 1 if not)"""
    from snapshoe.products.draw_verify import check, fetch, report

    base = gateway or get_settings().gateway_url
    published = _run(fetch(base, product_id))
    verdict = check(published)
    typer.echo(report(product_id, published, verdict))
    if not verdict.ok:
        raise typer.Exit(1)


@orders_app.command("lifecycle")
def orders_lifecycle(
    status: Annotated[
        bool, typer.Option("--status", help="due orders per status and how late the oldest is")
    ] = False,
    run: Annotated[
        bool, typer.Option("--run", help="run the lifecycle worker alone until SIGTERM")
    ] = False,
) -> None:
    """The lifecycle worker (expiry, PREPARING -> SHIPPING -> DELIVERED): status or run."""
    import signal

    from snapshoe.kernel.logs import configure_logging
    from snapshoe.orders.workers import lifecycle_status, run_lifecycle

    settings = get_settings()
    if status == run:
        raise typer.BadParameter("give one of --status or --run")
    if status:
        typer.echo(_run(lifecycle_status(settings)))
        return
    configure_logging("orders-lifecycle", settings.log_level, settings.log_json)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_lifecycle(settings, stop)

    _run(go())


def _consumer_queues(queue: str | None) -> list[str]:
    """``--queue`` as given, else every service's consumer queues (their ``QUEUES``)."""
    if queue:
        return [queue]
    names: list[str] = []
    for service in SERVICES:
        if _has_module(f"snapshoe.{service}.consumers"):
            names += list(importlib.import_module(f"snapshoe.{service}.consumers").QUEUES)
    return names


QueueOption = Annotated[
    str | None, typer.Option("--queue", "-q", help="e.g. orders.payments (default: all)")
]


@dlq_app.command("list")
def dlq_list(
    queue: QueueOption = None,
    limit: Annotated[int, typer.Option(help="most messages shown per queue")] = 100,
) -> None:
    """Show dead-lettered events (queue, type, id, why, first bytes); none is consumed."""
    from snapshoe.kernel.deadletters import peek

    letters = _run(peek(get_settings(), _consumer_queues(queue), limit=limit))
    for letter in letters:
        typer.echo(letter.line())
    typer.echo(f"{len(letters)} dead-lettered event(s)")


@dlq_app.command("replay")
def dlq_replay(
    queue: QueueOption = None,
    event_id: Annotated[
        list[str] | None, typer.Option("--id", help="event id to replay (repeatable)")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="replay every dead letter")] = False,
) -> None:
    """Re-publish dead letters to their original queue; each leaves its DLQ only once the
    broker confirmed the copy."""
    from snapshoe.kernel.deadletters import replay

    if bool(event_id) == replay_all:
        raise typer.BadParameter("give --id ID (one or more) or --all")
    ids = None if replay_all else set(event_id or [])
    done = _run(replay(get_settings(), _consumer_queues(queue), ids=ids))
    for letter in done:
        typer.echo(f"replayed {letter.message_id} ({letter.type}) to {letter.queue}")
    typer.echo(f"{len(done)} event(s) replayed")
    if ids is not None and len(done) < len(ids):
        missing = ids - {d.message_id for d in done}
        typer.echo(f"not found in any DLQ: {', '.join(sorted(missing))}", err=True)
        raise typer.Exit(1)


@bench_app.command("drop")
def bench_drop(
    buyers: Annotated[int, typer.Option("--buyers", "-n", help="N buyers")] = 20_000,
    pairs: Annotated[int, typer.Option("--pairs", "-s", help="S pairs")] = 1_000,
    sizes: Annotated[int, typer.Option(help="sizes the pairs are spread over")] = 10,
    limit: Annotated[int, typer.Option(help="per-buyer limit")] = 1,
    connections: Annotated[int, typer.Option("--connections", "-c")] = 1_000,
    threads: Annotated[int, typer.Option(help="wrk threads")] = 2,
    decline_share: Annotated[float, typer.Option(help="share of declined payments")] = 0.1,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            help="also the floor and the db_lock drop (needs SNAPSHOE_BENCH_BASELINES=true)",
        ),
    ] = False,
    compare_seconds: Annotated[float, typer.Option(help="time cap of the db_lock drop")] = 15.0,
    max_seconds: Annotated[float, typer.Option(help="time cap of the stampede")] = 120.0,
    pay_max_seconds: Annotated[
        float, typer.Option(help="time cap of the payments and re-buy rounds after it")
    ] = 300.0,
    seed: Annotated[int | None, typer.Option(help="random seed (sizes, declines)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="result JSON (default bench/out/drop-<time>.json)")
    ] = None,
) -> None:
    """A drop through the gateway of a running platform (`snapshoe up`): N buyers stampede
    for S pairs; then payments, checks from the databases, a JSON result and an HTML report."""
    from snapshoe.bench.drop import BenchRefused, DropConfig, run_drop, summary_lines

    cfg = DropConfig(
        buyers=buyers,
        pairs=pairs,
        sizes=sizes,
        per_user_limit=limit,
        connections=connections,
        threads=threads,
        decline_share=decline_share,
        compare=compare,
        compare_seconds=compare_seconds,
        max_seconds=max_seconds,
        pay_max_seconds=pay_max_seconds,
        seed=seed,
        out=out,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        result = _run(run_drop(get_settings(), cfg))
    except BenchRefused as exc:
        typer.echo(f"bench drop: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in summary_lines(result):
        typer.echo(line)
    if not result["ok"]:
        raise typer.Exit(1)


@bench_app.command("queue")
def bench_queue(
    buyers: Annotated[int, typer.Option("--buyers", "-n", help="N buyers")] = 20_000,
    pairs: Annotated[int, typer.Option("--pairs", "-s", help="S pairs")] = 1_000,
    sizes: Annotated[int, typer.Option(help="sizes the pairs are spread over")] = 10,
    window: Annotated[float, typer.Option(help="seconds of the pre-queue (joins spread)")] = 60.0,
    stream_share: Annotated[float, typer.Option(help="share holding the event stream")] = 1.0,
    poll_seconds: Annotated[float, typer.Option(help="ticket poll interval of the rest")] = 5.0,
    decline_share: Annotated[float, typer.Option(help="share of declined payments")] = 0.1,
    processes: Annotated[int, typer.Option(help="load worker processes")] = 4,
    admission_seconds: Annotated[int, typer.Option(help="the admission window")] = 60,
    compare: Annotated[
        bool, typer.Option("--compare/--no-compare", help="also the same drop in fcfs mode")
    ] = False,
    max_seconds: Annotated[float, typer.Option(help="time cap after the window")] = 600.0,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    out: Annotated[Path | None, typer.Option(help="result JSON (and .html beside it)")] = None,
) -> None:
    """A queue-mode drop through the gateway of a running platform: joins over the pre-queue,
    streams and polls, admitted buyers order and pay; figures and checks (docs/waiting-room.md).
    All buyers join from this machine: start the platform with
    SNAPSHOE_GATEWAY_MAX_CONNECTIONS_PER_CLIENT above the streams held per address and
    SNAPSHOE_QUEUE_JOIN_RATE_PER_MINUTE above the joins a minute (bench/RESULTS.md)."""
    from snapshoe.bench.queue import QueueConfig, run_queue

    cfg = QueueConfig(
        buyers=buyers,
        pairs=pairs,
        sizes=sizes,
        window_seconds=window,
        stream_share=stream_share,
        poll_seconds=poll_seconds,
        decline_share=decline_share,
        processes=processes,
        admission_seconds=admission_seconds,
        compare=compare,
        max_seconds=max_seconds,
        seed=seed,
        out=out,
    )
    result = _run(run_queue(get_settings(), cfg))
    shown = {k: v for k, v in result.items() if k not in ("check", "samples", "seen")}
    typer.echo(json.dumps(shown, indent=2, default=str))
    if not result["ok"]:
        raise typer.Exit(1)


@bench_app.command("draw")
def bench_draw(
    entries: Annotated[int, typer.Option("--entries", "-n", help="entries")] = 50_000,
    sizes: Annotated[int, typer.Option(help="sizes")] = 5,
    pairs_per_size: Annotated[int, typer.Option(help="pairs of each size")] = 200,
    decline_share: Annotated[float, typer.Option(help="share of cards that decline")] = 0.1,
    max_seconds: Annotated[float, typer.Option(help="time cap after the close")] = 600.0,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    out: Annotated[Path | None, typer.Option(help="result JSON (and .html beside it)")] = None,
) -> None:
    """A draw through a running platform: entries in bulk, then the draw timed (docs/draws.md)."""
    from snapshoe.bench.draw import DrawConfig, run_draw

    cfg = DrawConfig(
        entries=entries,
        sizes=sizes,
        pairs_per_size=pairs_per_size,
        decline_share=decline_share,
        max_seconds=max_seconds,
        seed=seed,
        out=out,
    )
    result = _run(run_draw(get_settings(), cfg))
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if not result["ok"]:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
