"""Whether an event must reach a queue: knows every event module, so that asking about a key
registers the types first."""

from __future__ import annotations

from snapshoe.kernel.contracts import (  # noqa: F401 (registers the types)
    draws,
    orders,
    payments,
    waiting_room,
)
from snapshoe.kernel.contracts.events import is_announcement


def must_route(routing_key: str) -> bool:
    """Whether an event of ``routing_key`` must reach a queue. Unknown keys must (the safe
    side: an event kept is visible, a dropped one is not)."""
    return not is_announcement(routing_key)
