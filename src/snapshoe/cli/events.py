"""``snapshoe events dlq list|replay``: dead-lettered events, read from the broker."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Annotated

import typer

from snapshoe.cli.apps import dlq_app
from snapshoe.cli.common import JsonOption, emit_json, has_module, run
from snapshoe.kernel.settings import SERVICES, get_settings


def _consumer_queues(queue: str | None) -> list[str]:
    """``--queue`` as given, else every service's consumer queues (their ``QUEUES``)."""
    if queue:
        return [queue]
    names: list[str] = []
    for service in SERVICES:
        if has_module(f"snapshoe.{service}.consumers"):
            names += list(importlib.import_module(f"snapshoe.{service}.consumers").QUEUES)
    return names


QueueOption = Annotated[
    str | None, typer.Option("--queue", "-q", help="e.g. orders.payments (default: all)")
]


@dlq_app.command("list")
def dlq_list(
    queue: QueueOption = None,
    limit: Annotated[int, typer.Option(help="most messages shown per queue")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Show dead-lettered events (queue, type, id, why, first bytes); none is consumed."""
    from snapshoe.kernel.deadletters import peek

    letters = run(peek(get_settings(), _consumer_queues(queue), limit=limit))
    if as_json:
        emit_json([dataclasses.asdict(letter) for letter in letters])
        return
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
    done = run(replay(get_settings(), _consumer_queues(queue), ids=ids))
    for letter in done:
        typer.echo(f"replayed {letter.message_id} ({letter.type}) to {letter.queue}")
    typer.echo(f"{len(done)} event(s) replayed")
    if ids is not None and len(done) < len(ids):
        missing = ids - {d.message_id for d in done}
        typer.echo(f"not found in any DLQ: {', '.join(sorted(missing))}", err=True)
        raise typer.Exit(1)
