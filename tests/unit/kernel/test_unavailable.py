"""The kernel's one 503 helper (issue 13, item 10)."""

from __future__ import annotations

from snapshoe.kernel.errors import backend_down, service_unavailable


def test_service_unavailable_sends_retry_after() -> None:
    problem = service_unavailable("Orders is unavailable; retry shortly")
    assert problem.status == 503
    assert problem.code == "service_unavailable"
    assert problem.headers == {"Retry-After": "1"}
    assert problem.body()["detail"] == "Orders is unavailable; retry shortly"


def test_service_unavailable_names_its_code_and_wait() -> None:
    problem = service_unavailable("Try again", retry_after=2, code="outcome_unknown")
    assert (problem.code, problem.headers) == ("outcome_unknown", {"Retry-After": "2"})
    assert service_unavailable("Down", retry_after=None).headers == {}


def test_backend_down_is_the_same_503() -> None:
    problem = backend_down("GET", "/x", OSError("away"))
    assert problem.body() == service_unavailable().body()
    assert problem.headers == {"Retry-After": "1"}
