"""HTTP API of the mail sink: read and clear what the SMTP side received."""

from __future__ import annotations

import html

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from snapshoe.mail_sink.domain import MailStore, Message
from snapshoe.mail_sink.schemas import Cleared, MessageOut

router = APIRouter()


def _store(request: Request) -> MailStore:
    store: MailStore = request.app.state.store
    return store


def _out(m: Message) -> MessageOut:
    return MessageOut(
        id=m.id,
        to=m.to,
        sender=m.sender,
        subject=m.subject,
        body=m.body,
        html=m.html,
        message_id=m.message_id,
        received_at=m.received_at,
    )


@router.get("/api/messages", response_model=list[MessageOut])
async def list_messages(
    request: Request, to: str | None = Query(default=None, max_length=320)
) -> list[MessageOut]:
    """Received messages, newest first; ``to`` filters by recipient (case-insensitive)."""
    return [_out(m) for m in _store(request).list(to)]


@router.delete("/api/messages", response_model=Cleared)
async def clear_messages(request: Request) -> Cleared:
    return Cleared(deleted=_store(request).clear())


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def inbox(request: Request, to: str | None = None) -> HTMLResponse:
    cells = (
        (m.received_at, m.to, m.subject, f"<pre>{html.escape(m.body)}</pre>")
        for m in _store(request).list(to)[:200]
    )
    rows = "\n".join(
        f"<tr><td>{html.escape(at)}</td><td>{html.escape(to_)}</td>"
        f"<td>{html.escape(subject)}</td><td>{body}</td></tr>"
        for at, to_, subject, body in cells
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SnapShoe mail sink</title>
<style>body{{font-family:sans-serif}}td{{vertical-align:top;border-top:1px solid #ddd;padding:4px}}
pre{{white-space:pre-wrap;margin:0}}</style></head>
<body><h1>SnapShoe mail sink</h1>
<p>Newest first (at most 200 shown). JSON: <a href="/api/messages">/api/messages</a></p>
<table><tr><th>received</th><th>to</th><th>subject</th><th>body</th></tr>
{rows}
</table></body></html>"""
    return HTMLResponse(page)
