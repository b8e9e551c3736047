"""Reliable events: transactional outbox, relay with publisher confirms, idempotent consumers.

- A service writes its event into its own ``outbox`` table in the same transaction as the change
  (:func:`add_to_outbox`), so a change without its event, or an event without its change, is
  impossible.
- :class:`Relay` publishes unpublished rows with publisher confirms and marks them published;
  it retries until the broker confirms. Several relays may run: rows are claimed with
  ``FOR UPDATE SKIP LOCKED``. A crash between publish and mark gives a duplicate, never a loss.
- :func:`consume` records each event id in the consumer's ``inbox`` table in the same
  transaction as the effect, so a duplicate delivery has no second effect. Queues are quorum
  queues with a delivery limit and a dead-letter exchange: a message that keeps failing ends in
  ``<queue>.dlq``, never silently acked.
- A *transient* failure (:func:`is_transient`: the database, Redis or the network is away) is
  retried in-process while the consumer holds the message, with capped, jittered exponential
  backoff, so an outage never spends the delivery limit; only a message that fails on its own
  (a poison message: invalid, or a bug) is requeued towards the limit and dead-lettered.
- The relay publishes ``mandatory``: an event no queue is bound to comes back from the broker,
  stays unpublished with ``last_error = 'unroutable'`` and is tried again later.
- :func:`prune` deletes published outbox rows and processed inbox rows after the retention.

Decisions and their reasons: ``docs/events.md``.

This module names the whole API; the code lives by job in ``outbox`` (tables, writes, pruning),
``relay`` (publishing), ``consuming`` (idempotent consumers), ``broker`` (exchange and queues)
and ``transient`` (which failures to retry, and how long to wait).

Library: aio-pika (maintained asyncio AMQP 0-9-1 client with robust reconnection and publisher
confirms).
"""

from __future__ import annotations

from snapshoe.kernel.broker import (
    DELIVERY_LIMIT,
    MAX_BACKOFF_SECONDS,
    connect,
    declare_consumer_queue,
    declare_exchange,
    declare_queues,
    exchange_name,
    publish_copy,
)
from snapshoe.kernel.consuming import (
    POISON_FAILURES,
    TRANSIENT_RETRIES,
    Handler,
    consume,
    handle_once,
)
from snapshoe.kernel.outbox import (
    PRUNE_BATCH,
    PRUNE_INTERVAL_SECONDS,
    UNROUTABLE,
    _now,
    add_many_to_outbox,
    add_to_outbox,
    messaging_tables,
    prune,
    run_pruner,
    unroutable_count,
)
from snapshoe.kernel.relay import UNROUTABLE_EVENTS, Relay
from snapshoe.kernel.transient import TRANSIENT_DB_CODES, is_transient, retry_delay

__all__ = [
    "DELIVERY_LIMIT",
    "MAX_BACKOFF_SECONDS",
    "POISON_FAILURES",
    "PRUNE_BATCH",
    "PRUNE_INTERVAL_SECONDS",
    "TRANSIENT_DB_CODES",
    "TRANSIENT_RETRIES",
    "UNROUTABLE",
    "UNROUTABLE_EVENTS",
    "Handler",
    "Relay",
    "_now",
    "add_many_to_outbox",
    "add_to_outbox",
    "connect",
    "consume",
    "declare_consumer_queue",
    "declare_exchange",
    "declare_queues",
    "exchange_name",
    "handle_once",
    "is_transient",
    "messaging_tables",
    "prune",
    "publish_copy",
    "retry_delay",
    "run_pruner",
    "unroutable_count",
]
