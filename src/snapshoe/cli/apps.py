"""The ``snapshoe`` command and its groups, shared by the modules that add commands to them.

Library: Typer (click underneath) for typed sub-commands with generated help; rich (which
Typer brings) for tables and progress.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="SnapShoe: limited-edition sneaker drops.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
products_app = typer.Typer(
    help="Catalog and stock: gate vs ledger, a drop's summary.", no_args_is_help=True
)
orders_app = typer.Typer(help="Orders: find, refund, the lifecycle worker.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks against the running platform.", no_args_is_help=True)
draws_app = typer.Typer(
    help="Draws (raffles): check one from what it published.", no_args_is_help=True
)
events_app = typer.Typer(help="Events: dead-letter queues, outbox status.", no_args_is_help=True)
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
