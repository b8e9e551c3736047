"""The products service's own settings (same ``SNAPSHOE_`` names as ever): its ledger writers
and how often it checks the stock gate's Redis. The shared ones are the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings


class ProductsSettings(Settings):
    """The kernel's shared settings and the products service's own knobs."""

    # Ledger transactions one products process has open at once. Each writes every admitted
    # reservation queued since the last one (group commit); sold-out refusals (the gate alone)
    # never wait for them.
    ledger_write_concurrency: int = Field(default=2, ge=1, le=64)
    # How often each products process reads the Redis run id (INFO server) to notice a Redis
    # that is not the one the stock gate was built on (a restart from a snapshot, a failover);
    # new connections are checked as they open. docs/products.md, "Which Redis?".
    gate_check_seconds: float = Field(default=1.0, gt=0, le=60)
    # How often the products worker runs the waiting rooms' outflow: lapse admissions, admit
    # the next buyers, end a sold-out queue (docs/waiting-room.md). An admission waits at most
    # this long after a pair comes back.
    queue_outflow_seconds: float = Field(default=0.2, gt=0, le=10)
    # Live ticket streams (SSE) one products process holds; beyond, 503 too_many_streams and
    # the client polls GET .../queue/me instead.
    queue_max_streams: int = Field(default=20_000, ge=1, le=200_000)
    # A queue refuses accounts made less than this long before its queue_opens_at (403
    # account_too_new): accounts made during the pre-queue are a classic bot sign. 0: off.
    queue_min_account_age_seconds: float = Field(default=0, ge=0, le=365 * 86400)
    # How often the products worker works on the draws: draw what is due, decide charged
    # entries from the ledger, charge the next entrants (docs/draws.md). A declined charge's
    # pair goes to the next entrant at most this long after the decline is known.
    draw_step_seconds: float = Field(default=0.5, gt=0, le=3600)
    # Drawn entrants' orders and charges one products worker asks for at once (each is an
    # orders call, then a payments call that waits for the PG).
    draw_charge_concurrency: int = Field(default=32, ge=1, le=512)
    # A drawn entrant's order and charge not seen finished this long after they were last
    # asked for (a worker died, a call failed) are asked for again, under the same ids.
    draw_resend_seconds: float = Field(default=20.0, gt=0, le=3600)
