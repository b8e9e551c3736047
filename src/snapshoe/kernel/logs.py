"""JSON structured logs carrying the request id the gateway assigned and the trace and span
ids of the work being done."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson
from opentelemetry import trace

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# (trace_id, span_id) from the traceparent a request or event arrived with, for logs when no
# span is being recorded (tracing export off): the span id is then the caller's.
trace_var: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "trace_ids", default=None
)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            entry["request_id"] = rid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = f"{span.trace_id:032x}"
            entry["span_id"] = f"{span.span_id:016x}"
        elif (ids := trace_var.get()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_configured: tuple[str, str, bool, logging.Handler] | None = None


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Set the root logger's one handler. Once per process: a second call with the same
    arguments, while that handler is still in place, changes nothing."""
    global _configured
    root = logging.getLogger()
    if _configured is not None:
        *same, handler = _configured
        if (
            same == [service, level, json]
            and root.handlers == [handler]
            and getattr(handler, "stream", None) is sys.stdout
        ):
            return
    handler = logging.StreamHandler(sys.stdout)
    if json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log duplicates ours (which has the request id).
    logging.getLogger("uvicorn.access").disabled = True
    _configured = (service, level, json, handler)
