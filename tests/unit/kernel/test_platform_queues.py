"""The kernel's list of every consumer queue (the operator's DLQ figure reads each) is the
union of the services' own ``consumers.QUEUES``: a queue added to a service and not here fails."""

from __future__ import annotations

import importlib

from snapshoe.kernel.deadletters import PLATFORM_QUEUES

SERVICES = ("users", "products", "orders", "payments")


def test_the_kernel_names_every_services_consumer_queues() -> None:
    found: set[str] = set()
    for service in SERVICES:
        try:
            consumers = importlib.import_module(f"snapshoe.{service}.consumers")
        except ModuleNotFoundError:
            continue
        found |= set(consumers.QUEUES)
    assert set(PLATFORM_QUEUES) == found
    assert len(PLATFORM_QUEUES) == len(set(PLATFORM_QUEUES))
