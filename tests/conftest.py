"""Session fixtures: the real platform, started once per test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.platform import (
    Platform,
    make_test_settings,
    reset_state,
    start_platform,
    stop_platform_process,
)


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    settings = make_test_settings()
    reset_state(settings)
    running = start_platform()
    try:
        yield running
    finally:
        code = stop_platform_process(running.proc)
        # A clean stop is part of the contract: a non-zero exit fails the run.
        assert code == 0, f"snapshoe up exited with {code}; see {running.log_path}"
