"""The aiosmtpd handler: accept every message and store it."""

from __future__ import annotations

import logging
from typing import Any

from snapshoe.mail_sink.domain import MailStore, parse_message

log = logging.getLogger("snapshoe.mail_sink")


class SinkHandler:
    # aiosmtpd calls hooks by name: handle_DATA is its spelling.
    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            messages = parse_message(raw, list(envelope.rcpt_tos), str(envelope.mail_from or ""))
        except Exception:  # a malformed message must not take the sink down
            log.exception("could not parse a message for %s", envelope.rcpt_tos)
            return "554 Transaction failed: unparseable message"
        self.store.add(messages)
        for m in messages:
            log.info("mail to %s: %s", m.to, m.subject, extra={"to": m.to, "subject": m.subject})
        return "250 Message accepted for delivery"
