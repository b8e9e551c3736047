"""Outgoing account mail over SMTP (aiosmtplib), through a queue in Redis.

Requests never send mail themselves: signup, resend and password reset only add a job to
the queue (a Redis stream, :class:`MailQueue`) and answer, so every branch (new, known,
verified, unknown address) costs the same one append and the answer's timing tells nothing
(docs/security.md).
The users worker drains the queue (:func:`drain`): a job is acknowledged only once its mail
is handed to the SMTP server, so a failed send is retried every ``mail_retry_seconds`` (a
pending entry claimed again), by any worker, until the job's deadline (a code's lifetime:
a code mailed later would be dead on arrival), when it is dropped with an error log.
Draw result mail (users.draw_mail) goes through the same queue, with a 24 h deadline, queued
once per event by :meth:`MailQueue.enqueue_once`.

Library: Redis streams with a consumer group (XADD / XREADGROUP / XAUTOCLAIM / XACK), from
redis-py, already a dependency: at-least-once delivery across worker processes without a new
broker queue or a database table (and so no migration). A job holds a code in the clear until
it is sent, no longer than the code lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from snapshoe.kernel.redis import key
from snapshoe.kernel.settings import Settings
from snapshoe.users.settings import UsersSettings

log = logging.getLogger("snapshoe.users.mail")

CODE_SUBJECT = "Your SnapShoe verification code"
RESET_SUBJECT = "Your SnapShoe password reset code"
NOTICE_SUBJECT = "Someone tried to sign up with your SnapShoe address"


class Mailer:
    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._sender = settings.mail_from
        self._timeout = timeout

    async def send(self, to: str, subject: str, body: str) -> bool:
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            await aiosmtplib.send(msg, hostname=self._host, port=self._port, timeout=self._timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            log.warning(
                "mail to the user could not be sent",
                exc_info=True,
                extra={"subject": subject, "smtp": f"{self._host}:{self._port}"},
            )
            return False
        return True

    async def send_code(self, to: str, code: str, ttl_seconds: int) -> bool:
        minutes = max(1, ttl_seconds // 60)
        body = (
            "Your SnapShoe verification code is:\n\n"
            f"{code}\n\n"
            f"It expires in {minutes} minutes. If you did not sign up, ignore this mail.\n"
        )
        return await self.send(to, CODE_SUBJECT, body)

    async def send_already_registered(self, to: str) -> bool:
        body = (
            "Someone (maybe you) tried to create a SnapShoe account with this address, "
            "but it already has one.\n\n"
            "If it was you, log in instead, or reset your password. If your address is not "
            "verified yet, ask for a new code from the sign-in page.\n"
            "If you did not create that account yourself, reset its password from the "
            "sign-in page: that signs out everyone who used it and makes it yours.\n"
            "If it was not you, you can ignore this mail: nothing changed.\n"
        )
        return await self.send(to, NOTICE_SUBJECT, body)

    async def send_reset_code(self, to: str, code: str, ttl_seconds: int) -> bool:
        minutes = max(1, ttl_seconds // 60)
        body = (
            "Your SnapShoe password reset code is:\n\n"
            f"{code}\n\n"
            f"It expires in {minutes} minutes. Setting a new password signs out every "
            "session of this account.\n"
            "If you did not ask for it, ignore this mail: your password did not change.\n"
        )
        return await self.send(to, RESET_SUBJECT, body)


# The queue

GROUP = "mailers"
MAX_QUEUED = 100_000  # stream length cap (approximate): a bound, never reached in practice
Job = dict[str, Any]
JobRunner = Callable[[Job], Awaitable[bool]]


def queue_key(settings: Settings) -> str:
    return key(settings, "users", "mail_queue")


# Append a job unless its marker is there, then set the marker: atomic, so two concurrent calls
# cannot both append. Append first: a failure between the two leaves a job without its marker
# (a redelivery could queue it again), never a marker without its job (a mail lost).
_ENQUEUE_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'job', ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
return 1
"""


class MailQueue:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._stream = queue_key(settings)
        self._enqueue_once = redis.register_script(_ENQUEUE_ONCE)

    async def enqueue(self, job: Job, *, ttl_seconds: float) -> None:
        """Queue a job; it is given up ``ttl_seconds`` from now if it could not be done."""
        body = {**job, "deadline": time.time() + ttl_seconds}
        await self._redis.xadd(
            self._stream, {"job": orjson.dumps(body)}, maxlen=MAX_QUEUED, approximate=True
        )

    async def enqueue_once(
        self, job: Job, *, ttl_seconds: float, once: str, once_ttl_seconds: float
    ) -> bool:
        """Queue a job unless one was queued under ``once`` within ``once_ttl_seconds``
        (e.g. an event id: a redelivered event queues nothing). True when it was queued."""
        body = {**job, "deadline": time.time() + ttl_seconds}
        marker = key(self._settings, "users", "mail_once", once)
        queued = await self._enqueue_once(
            keys=[self._stream, marker],
            args=[orjson.dumps(body), MAX_QUEUED, max(1, int(once_ttl_seconds))],
        )
        return bool(queued)


async def drain(
    settings: UsersSettings,
    redis: Redis,
    run_job: JobRunner,
    stop: asyncio.Event,
    *,
    retry_seconds: float | None = None,
    batch: int = 16,
) -> None:
    """Do queued jobs until ``stop``. ``run_job`` returns True when the job is done (its mail
    sent, or nothing to send) and False to have it retried after ``retry_seconds``."""
    stream = queue_key(settings)
    retry_ms = int(1000 * (retry_seconds or settings.mail_retry_seconds))
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    backoff = 0.5
    while not stop.is_set():
        try:
            try:
                await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            while not stop.is_set():
                # Entries another try (of any worker) left unacknowledged, once idle enough.
                autoclaimed: Any = await redis.xautoclaim(
                    stream, GROUP, consumer, min_idle_time=retry_ms, start_id="0-0", count=batch
                )
                claimed = autoclaimed[1]
                fresh: Any = await redis.xreadgroup(
                    GROUP, consumer, {stream: ">"}, count=batch, block=500
                )
                entries = list(claimed) + [e for _, got in fresh or [] for e in got]
                if entries:
                    await asyncio.gather(*(_one(redis, stream, e, run_job) for e in entries))
                backoff = 0.5
        except (RedisError, OSError):
            log.exception("mail queue unavailable; retrying in %.1fs", backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)


# A job waits this long after it was queued: its work (a database write, an SMTP session)
# then never competes for the CPU with the answer of the request that queued it, which would
# make that answer slower for exactly the accounts that get mail.
MIN_AGE_SECONDS = 0.1


async def _one(redis: Redis, stream: str, entry: Any, run_job: JobRunner) -> None:
    entry_id, fields = entry
    queued_at = int(str(entry_id).split("-", 1)[0]) / 1000  # stream ids start with ms time
    if (wait := queued_at + MIN_AGE_SECONDS - time.time()) > 0:
        await asyncio.sleep(wait)
    if not fields:  # trimmed or deleted meanwhile
        await redis.xack(stream, GROUP, entry_id)
        return
    try:
        job: Job = orjson.loads(fields["job"])
    except (KeyError, orjson.JSONDecodeError):
        log.error("undecodable mail job %s dropped", entry_id)
        done = True
    else:
        if time.time() > float(job.get("deadline", 0)):
            log.error("mail job given up after its deadline", extra={"kind": job.get("kind")})
            done = True
        else:
            try:
                done = await run_job(job)
            except Exception:
                log.exception("mail job failed; it will be retried")
                done = False
    if done:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
