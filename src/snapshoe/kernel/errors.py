"""Problem Details (RFC 9457) errors with a stable machine-readable ``code``.

Handlers raise :class:`Problem`; the app turns it, validation errors, unknown routes and any
unexpected exception into ``application/problem+json``. Clients switch on ``code``, never on
``title`` or ``detail``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("snapshoe.errors")

_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Validation failed"),
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_error", "Internal error"),
    503: ("service_unavailable", "Service unavailable"),
}


class Problem(Exception):
    """An expected failure that the client should see, with a stable ``code``."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str | None = None,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or code)
        self.status = status
        self.code = code
        self.title = title or _STATUS_CODES.get(status, (code, code.replace("_", " ")))[1]
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": f"https://snapshoe.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def unauthorized(detail: str = "A valid bearer token is required") -> Problem:
    return Problem(
        401, "unauthorized", detail=detail, headers={"WWW-Authenticate": 'Bearer realm="snapshoe"'}
    )


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "not_found", detail=f"No such {what}")


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return Problem(400, "invalid_json", "Malformed JSON", "The body is not valid JSON")
        loc = [str(p) for p in err.get("loc", ())]
        errors.append(
            {"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type")}
        )
    return Problem(422, "validation_error", detail="The request is not valid", errors=errors)


# The database or Redis could not be reached, or every database connection of this process
# stayed busy for the pool's whole timeout: the client may retry; it is not a bug.
BACKEND_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    RedisConnectionError,
    RedisTimeout,
)


def service_unavailable(
    detail: str = "A backing service is unavailable; retry shortly",
    *,
    retry_after: int | None = 1,
    code: str = "service_unavailable",
) -> Problem:
    """The one 503: ``code`` (``service_unavailable`` unless a service names its own, e.g.
    ``outcome_unknown``) with ``Retry-After: retry_after`` seconds (``None``: no header)."""
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return Problem(503, code, detail=detail, headers=headers)


def backend_down(method: str, path: str, exc: Exception) -> Problem:
    log.error("backend unavailable on %s %s: %s", method, path, exc)
    return service_unavailable()


def install_error_handlers(app: FastAPI) -> None:
    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_problem(exc))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code, title = _STATUS_CODES.get(exc.status_code, ("error", "Error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(
            Problem(exc.status_code, code, title, detail, headers=dict(exc.headers or {}))
        )

    async def on_backend_down(request: Request, exc: Exception) -> Response:
        return problem_response(backend_down(request.method, request.url.path, exc))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # A bug: log it with the request id, never leak internals to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal_error", detail="Unexpected error"))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for backend_error in BACKEND_ERRORS:
        app.add_exception_handler(backend_error, on_backend_down)
    app.add_exception_handler(Exception, on_unexpected)
