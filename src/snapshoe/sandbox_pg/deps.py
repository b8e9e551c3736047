"""The sandbox PG's dependency record, built by :mod:`snapshoe.sandbox_pg.bootstrap`."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from snapshoe.kernel.settings import Settings
from snapshoe.sandbox_pg.repository import Store
from snapshoe.sandbox_pg.settings import SandboxSettings
from snapshoe.sandbox_pg.webhooks import WebhookSender


@dataclass(slots=True)
class Deps:
    settings: Settings
    sandbox: SandboxSettings
    store: Store
    webhooks: WebhookSender | None = None
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
