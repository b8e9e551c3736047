"""Received mail: MIME decoding and the bounded, thread-safe in-memory store.

No I/O here. The SMTP server runs in its own thread (aiosmtpd's ``Controller``) while the HTTP
API runs on uvicorn's loop, so the store guards its deque with a lock.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    to: str
    sender: str
    subject: str
    body: str
    html: str | None
    message_id: str | None
    received_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_of(msg: EmailMessage, subtype: str) -> str | None:
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    content = part.get_content()  # decodes transfer encoding and charset
    # SMTP carries CRLF line ends; readers (and regexes in tests) expect plain newlines.
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def parse_message(
    raw: bytes, recipients: list[str], sender: str, received_at: datetime | None = None
) -> list[Message]:
    """One stored message per envelope recipient (the envelope, not the To header, says who
    got it: Bcc recipients appear nowhere else). ``body`` is the text/plain part, or the
    HTML part when there is no plain one."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)  # policy.default always builds EmailMessage
    plain = _text_of(msg, "plain")
    html = _text_of(msg, "html")
    when = (received_at or datetime.now(UTC)).astimezone(UTC)
    stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    subject = str(msg.get("subject", ""))
    message_id = msg.get("message-id")
    return [
        Message(
            id=uuid.uuid4().hex,
            to=rcpt,
            sender=sender,
            subject=subject,
            body=plain if plain is not None else (html or ""),
            html=html,
            message_id=str(message_id) if message_id else None,
            received_at=stamp,
        )
        for rcpt in recipients
    ]


class MailStore:
    """The newest ``capacity`` messages; older ones fall off."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._messages: deque[Message] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, messages: list[Message]) -> None:
        with self._lock:
            self._messages.extend(messages)

    def list(self, to: str | None = None) -> list[Message]:
        """Newest first; ``to`` matches the recipient case-insensitively."""
        with self._lock:
            snapshot = list(self._messages)
        snapshot.reverse()
        if to is None:
            return snapshot
        wanted = to.strip().casefold()
        return [m for m in snapshot if m.to.casefold() == wanted]

    def clear(self) -> int:
        with self._lock:
            count = len(self._messages)
            self._messages.clear()
        return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)
