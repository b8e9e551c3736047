"""``snapshoe bench drop|queue|draw|soak``: benchmarks through the gateway of a running platform
(code in ``snapshoe.bench``, results in bench/RESULTS.md)."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from snapshoe.cli.apps import bench_app
from snapshoe.cli.common import run
from snapshoe.kernel.settings import get_settings

FaultsOption = Annotated[
    str | None,
    typer.Option(
        "--faults",
        help="a drop on a platform of its own while a nemesis breaks it: a schedule "
        "(AT:ACTION[:ARG],... or small / default; docs/reliability.md), then the checker",
    ),
]
TrickleOption = Annotated[
    float, typer.Option(help="--faults: late buyers' order attempts per second")
]
FAULTS_PARAMS = (
    "buyers",
    "pairs",
    "sizes",
    "connections",
    "threads",
    "decline_share",
    "seed",
    "out",
)


def with_faults(command: Callable[..., None]) -> Callable[..., None]:
    """``bench drop``'s ``--faults SCHEDULE`` (and ``--trickle``): with it, the run goes to the
    fault runner (``snapshoe.bench.faults_run``) instead, with the drop's sizes."""
    sig = inspect.signature(command, eval_str=True)

    @functools.wraps(command)
    def drop(*args: Any, faults: str | None = None, trickle: float = 8.0, **kw: Any) -> None:
        if faults is None:
            return command(*args, **kw)
        if kw.get("compare"):
            raise typer.BadParameter("--faults runs no --compare baselines")
        return _bench_faults(faults, trickle, **{k: kw[k] for k in FAULTS_PARAMS})

    extra = [
        inspect.Parameter(
            "faults", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=FaultsOption
        ),
        inspect.Parameter(
            "trickle", inspect.Parameter.KEYWORD_ONLY, default=8.0, annotation=TrickleOption
        ),
    ]
    drop.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    drop.__annotations__ = {
        **command.__annotations__,
        "faults": FaultsOption,
        "trickle": TrickleOption,
    }
    return drop


def _run_bench(
    name: str, cfg: Any, start: Callable[[], Any], lines: Callable[[dict[str, Any]], Any]
) -> None:
    """What every bench command does with its config: refuse a bad one (usage error), run it,
    say why the platform refused it (exit 2), print its summary, exit 1 when it failed."""
    from snapshoe.bench.drop_model import BenchRefused

    try:
        cfg.validate()
    except ValueError as exc:  # a ScheduleError too
        raise typer.BadParameter(str(exc)) from exc
    try:
        result = run(start())
    except BenchRefused as exc:
        typer.echo(f"bench {name}: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in lines(result):
        typer.echo(line)
    if not result["ok"]:
        raise typer.Exit(1)


def _bench_faults(
    schedule: str,
    trickle: float,
    buyers: int,
    pairs: int,
    sizes: int,
    connections: int,
    threads: int,
    decline_share: float,
    seed: int | None,
    out: Path | None,
) -> None:
    """``bench drop --faults``: the fault run (``snapshoe.bench.faults_run``)."""
    from snapshoe.bench.faults_run import FaultsConfig, run_faults, summary_lines

    cfg = FaultsConfig(
        schedule=schedule,
        buyers=buyers,
        pairs=pairs,
        sizes=sizes,
        connections=connections,
        threads=threads,
        decline_share=decline_share,
        trickle_per_second=trickle,
        seed=seed,
        out=out,
    )
    _run_bench("drop --faults", cfg, lambda: run_faults(cfg), summary_lines)


@bench_app.command("drop")
@with_faults
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
    from snapshoe.bench.drop import DropConfig, run_drop, summary_lines

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
    _run_bench("drop", cfg, lambda: run_drop(get_settings(), cfg), summary_lines)


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
    result = run(run_queue(get_settings(), cfg))
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
    result = run(run_draw(get_settings(), cfg))
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if not result["ok"]:
        raise typer.Exit(1)


@bench_app.command("soak")
def bench_soak(
    minutes: Annotated[
        float, typer.Option(help="how long the load runs (fractions allowed)")
    ] = 30.0,
    rate: Annotated[float, typer.Option(help="requests per second, every kind together")] = 50.0,
    out: Annotated[
        Path | None, typer.Option(help="result JSON (default bench/out/soak-<time>.json)")
    ] = None,
    html: Annotated[
        bool, typer.Option("--html/--no-html", help="the HTML report beside the JSON")
    ] = True,
) -> None:
    """A steady load through the gateway of a running platform for M minutes (browse, cart,
    buy, pay, cancel), sampling every platform process's memory, open files and connections:
    flat after the warm-up, latency flat, 0 5xx (docs/reliability.md, "Soak")."""
    from snapshoe.bench.soak import SoakConfig, run_soak, summary_lines

    cfg = SoakConfig(minutes=minutes, rate=rate, out=out, html=html)
    _run_bench("soak", cfg, lambda: run_soak(get_settings(), cfg), summary_lines)
