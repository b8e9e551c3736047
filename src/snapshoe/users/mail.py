"""Outgoing account mail over SMTP (aiosmtplib).

Sign-up and resend mail is sent inline, inside the request, after the transaction has committed:
it is simple, the mail is in the mailbox by the time the client gets its 202, and every branch of
signup and resend sends exactly one message, which keeps known and unknown addresses alike in
timing. The password reset code is mailed after the answer (a background task), since only a
known address gets one. A
short timeout bounds the wait; a failure is logged and never shown to the client (the answer
must not depend on the address, and the user can ask for a resend).
"""

from __future__ import annotations

import logging
from email.message import EmailMessage

import aiosmtplib

from snapshoe.kernel.settings import Settings

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
