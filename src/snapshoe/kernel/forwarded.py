"""The client address of a request, as a service behind the gateway sees it.

The gateway deletes every ``X-Forwarded-*`` (and ``Forwarded``, ``X-Real-IP``...) header a
client sends, then adds its own ``X-Forwarded-For: <client address>`` (HAProxy ``option
forwardfor``). So the last entry of that header is the one the nearest proxy wrote: the only
one trusted. Without the header (a caller inside the network, past the gateway) the peer
address is the client. Services run with uvicorn's ``proxy_headers`` off, so ``scope["client"]``
is always the real peer.
"""

from __future__ import annotations

from starlette.requests import Request


def client_address(request: Request) -> str:
    forwarded = request.headers.getlist("x-forwarded-for")
    if forwarded:
        last = forwarded[-1].rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    client = request.client
    return client.host if client is not None else "unknown"
