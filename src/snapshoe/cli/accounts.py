"""``snapshoe users create-admin``."""

from __future__ import annotations

from typing import Annotated

import typer

from snapshoe.cli.apps import users_app
from snapshoe.cli.common import run
from snapshoe.kernel.settings import get_settings


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
        result = run(create(settings, email, password, name))
    except PolicyError as exc:
        typer.echo(f"create-admin: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"admin {result.email} {'created' if result.created else 'promoted'}")
