"""Addresses for tests: a free TCP port, and loopback source addresses that no other client of
this run uses, so per-address limits (the gateway's and the users service's) stay apart."""

from __future__ import annotations

import itertools
import socket

# 127.0.0.1 is everyone's; tests take 127.0.0.2 onwards, one counter for the whole run.
_addresses = itertools.count(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_address() -> str:
    """A loopback source address no other client of this run uses."""
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 1}"
