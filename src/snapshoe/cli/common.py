"""What the command modules share: running a coroutine, start-up settings, ``--json`` output
and rich tables (rich is imported only when a table is drawn)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from snapshoe.kernel.settings import Settings, UnsafeSecretsError, check_start_secrets, get_settings

if TYPE_CHECKING:
    from rich.progress import Progress

    from snapshoe.cli.admin_client import AdminClient

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def start_settings(role: str) -> Settings:
    """Settings of a process about to start as ``role``; outside dev and test, a missing or
    public default secret stops it here, with what to set, before it binds or connects."""
    settings = get_settings()
    try:
        check_start_secrets(settings, role)
    except UnsafeSecretsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    return settings


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    header: bool = True,
) -> None:
    """A rich table on stdout (plain, without colour, when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=header)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that ids are not folded
        console = Console(width=max(console.width, 200))
    console.print(table)


T = TypeVar("T")


def admin_call(work: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run ``work`` with an admin API client (admin_client.py: a minted, audited token);
    a problem answer or an unreachable platform ends the command with a message, exit 1."""
    from snapshoe.cli.admin_client import AdminApiError, AdminClient, AuditError

    settings = get_settings()

    async def go() -> T:
        async with AdminClient(settings) as admin:
            return await work(admin)

    try:
        result: T = run(go())
    except AuditError as exc:
        typer.echo(f"snapshoe: {exc}", err=True)
        raise typer.Exit(2) from exc
    except AdminApiError as exc:
        typer.echo(f"snapshoe: {exc}", err=True)
        if exc.status == 0:
            typer.echo(
                f"  is the platform up at {settings.gateway_url}? (snapshoe up; "
                "SNAPSHOE_GATEWAY_PORT)",
                err=True,
            )
        raise typer.Exit(1) from exc
    return result


def progress() -> Progress:
    """A progress bar on stderr (stdout stays for the answer, tables or --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    )
