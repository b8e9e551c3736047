"""``snapshoe products reconcile``: the Redis stock gate against the DB ledger.

By default it compares under the rebuild's lock and repairs the gate when they differ
(products' ``rebuild.reconcile``, run here against the databases and Redis in settings), then
lists every difference it repaired. ``--check`` only looks: the drift figure of the admin API
(read twice without the lock, so admissions on their way to the ledger are not counted), exit 1
when the gate has drifted; nothing is changed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from snapshoe.cli.apps import products_app
from snapshoe.cli.common import JsonOption, admin_call, emit_json, print_table, run
from snapshoe.kernel.settings import get_settings


def _difference_row(d: dict[str, Any]) -> list[Any]:
    what = d.get("item_id") or d.get("buyer_id") or ""
    return [d.get("kind"), d.get("product_id"), what, d.get("ledger"), d.get("gate")]


def _check(as_json: bool) -> None:
    drift = admin_call(lambda a: a.get("/api/admin/operations"))["gate_drift"]
    drifted = drift["status"] == "ok" and bool(drift.get("differences"))
    if as_json:
        emit_json({**drift, "drifted": drifted})
    elif drift["status"] != "ok":
        typer.echo("gate drift: unavailable (products did not answer)")
    elif not drift.get("built"):
        typer.echo("gate drift: no gate is built (the next reservation or reconcile builds it)")
    else:
        typer.echo(
            f"gate drift: {drift['items']} item(s) whose pairs left differ, "
            f"{drift['differences']} difference(s) in all"
            + (f"; repair: {drift['fix']}" if drifted else "; the gate matches the ledger")
        )
    if drifted or drift["status"] != "ok":
        raise typer.Exit(1)


@products_app.command("reconcile")
def reconcile(
    check: Annotated[
        bool, typer.Option("--check", help="only report drift (admin API); exit 1 if any")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the Redis stock gate against the DB ledger, repair the gate, report differences."""
    if check:
        _check(as_json)
        return
    from snapshoe.products.workers import reconcile as run_reconcile

    report = run(run_reconcile(get_settings()))
    if as_json:
        emit_json(report.as_dict())
        return
    typer.echo(str(report).splitlines()[0])
    if report.differences:
        columns = ("kind", "product", "item / buyer", "ledger", "gate")
        rows = [_difference_row(d) for d in report.differences]
        print_table("differences (the gate now holds the ledger's values)", columns, rows)
