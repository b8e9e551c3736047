"""Page cursors: base64url(JSON) of the last row's sort key, opaque to clients and validated on
the way in, so a bad cursor is a 422 and never a 500. Each service says what its key holds."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

MAX_CURSOR_LENGTH = 200
VERSION = 1


class InvalidCursor(ValueError):
    pass


def encode(key: dict[str, Any]) -> str:
    raw = orjson.dumps({"v": VERSION, **key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> dict[str, Any]:
    """The key a cursor holds (without its version); InvalidCursor for anything else."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor too long")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(data, dict) or data.pop("v", None) != VERSION:
        raise InvalidCursor("unknown cursor")
    return data


def text_field(key: dict[str, Any], name: str, max_length: int) -> str:
    value = key.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidCursor("malformed cursor")
    return value
