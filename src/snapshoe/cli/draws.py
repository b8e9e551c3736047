"""``snapshoe draws verify``: recompute a published draw."""

from __future__ import annotations

from typing import Annotated

import typer

from snapshoe.cli.apps import draws_app
from snapshoe.cli.common import run
from snapshoe.kernel.settings import get_settings


@draws_app.command("verify")
def draws_verify(
    product_id: str,
    gateway: Annotated[str | None, typer.Option(help="the gateway's URL")] = None,
) -> None:
    """Recompute a published draw: do the seed and the winners check out? (exit 1 if not)"""
    from snapshoe.products.draw_verify import check, fetch, report

    base = gateway or get_settings().gateway_url
    published = run(fetch(base, product_id))
    verdict = check(published)
    typer.echo(report(product_id, published, verdict))
    if not verdict.ok:
        raise typer.Exit(1)
