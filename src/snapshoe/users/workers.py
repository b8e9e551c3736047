"""Background loops of the users service: the cart's ``order.placed`` consumer, the draw
result mail's ``draw.entry_decided`` consumer (users.draw_mail), the buyer's order mail
consumer (users.order_mail: order events and ``queue.admitted``), the account mail queue
(users.mail.drain: the mail of sign-up, resend, password reset, draw results and orders), the
inbox retention prune, and the expiry of accounts left unverified
(``SNAPSHOE_UNVERIFIED_ACCOUNT_TTL_HOURS``).

``snapshoe worker users`` runs :func:`run` (``snapshoe up`` starts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.db import Sessions, create_engine, create_sessions
from snapshoe.kernel.messaging import consume, run_pruner
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.users import handlers
from snapshoe.users.bootstrap import build_deps, close_deps
from snapshoe.users.consumers import (
    CART_HANDLERS,
    CART_QUEUE,
    DRAW_MAIL_QUEUE,
    ORDER_MAIL_QUEUE,
    draw_mail_handlers,
    draw_order_placed,
    not_from_cart,
    order_mail_handlers,
)
from snapshoe.users.deps import Deps
from snapshoe.users.draw_mail import DRAW_RESULT, send_draw_result
from snapshoe.users.mail import drain
from snapshoe.users.order_mail import ORDER_MAIL, send_order_mail
from snapshoe.users.reset import reset_now
from snapshoe.users.settings import UsersSettings
from snapshoe.users.tables import inbox
from snapshoe.users.verification import resend_now

log = logging.getLogger("snapshoe.users.worker")

# Each message is one short transaction; a few connections are plenty.
POOL_SIZE = 4
# How often unverified accounts past their TTL are looked for: an expired account lives at
# most this much longer (sign-up of its address replaces it at once anyway).
EXPIRY_INTERVAL_SECONDS = 60.0


async def expire_unverified(
    settings: UsersSettings, sessions: Sessions, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            n = await handlers.expire_unverified_accounts(
                sessions, now=utcnow(), ttl_hours=settings.unverified_account_ttl_hours
            )
            if n:
                log.info("deleted %d accounts left unverified", n)
        except Exception:  # the database may be away for a while; try again next round
            log.exception("expiry of unverified accounts failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EXPIRY_INTERVAL_SECONDS)


async def run_mail_job(deps: Deps, job: dict[str, Any]) -> bool:
    """One queued mail job (users.mail.drain): True when done, False to retry it."""
    kind, to = job.get("kind"), str(job.get("to", ""))
    ttl = deps.settings.verification_code_ttl_seconds
    if kind == "code":
        return await deps.mailer.send_code(to, str(job["code"]), ttl)
    if kind == "notice":
        return await deps.mailer.send_already_registered(to)
    if kind == "resend":
        return await resend_now(deps, to)
    if kind == "reset":
        return await reset_now(deps, to)
    if kind == DRAW_RESULT:
        return await send_draw_result(deps.mailer, job)
    if kind == ORDER_MAIL:
        return await send_order_mail(deps.mailer, job)
    log.error("unknown mail job %r dropped", kind)
    return True


async def run(shared: Settings, stop: asyncio.Event) -> None:
    settings = settings_for(UsersSettings, shared)
    engine = create_engine(settings, "users", pool_size=POOL_SIZE)
    sessions = create_sessions(engine)
    deps = await build_deps(settings)  # the mail jobs' handlers need what requests have

    async def mail_job(job: dict[str, Any]) -> bool:
        return await run_mail_job(deps, job)

    try:
        await asyncio.gather(
            consume(
                settings,
                sessions,
                inbox,
                queue=CART_QUEUE,
                handlers=CART_HANDLERS,
                stop=stop,
                prefetch=POOL_SIZE * 2,
                ignore=not_from_cart,
            ),
            consume(
                settings,
                sessions,
                inbox,
                queue=DRAW_MAIL_QUEUE,
                handlers=draw_mail_handlers(settings, deps.mail_queue),
                stop=stop,
                prefetch=POOL_SIZE * 2,
            ),
            consume(
                settings,
                sessions,
                inbox,
                queue=ORDER_MAIL_QUEUE,
                handlers=order_mail_handlers(settings, deps.mail_queue),
                stop=stop,
                prefetch=POOL_SIZE * 2,
                ignore=draw_order_placed,
            ),
            expire_unverified(settings, sessions, stop),
            run_pruner(settings, sessions, stop, outbox=None, inbox=inbox),
            drain(settings, deps.redis, mail_job, stop),
        )
    finally:
        await close_deps(deps)
        await engine.dispose()
