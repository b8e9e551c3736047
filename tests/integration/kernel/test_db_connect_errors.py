"""A database going away while a connection is being made is an outage (503, retried), not a
bug (500): asyncmy's bare RuntimeError of that moment is said as the driver's disconnect
(found by issue 18's fault runs: three payment confirms answered 500 during a MariaDB stop)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tests.support.platform import make_test_settings

from snapshoe.kernel.db import create_engine
from snapshoe.kernel.errors import BACKEND_ERRORS
from snapshoe.kernel.transient import is_transient


async def test_the_socket_gone_during_connect_is_a_backend_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = create_engine(make_test_settings(), "orders")
    real = engine.dialect.connect

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Transport does not expose socket instance")

    monkeypatch.setattr(engine.dialect, "connect", gone)
    try:
        with pytest.raises(OperationalError) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert isinstance(caught.value, BACKEND_ERRORS)
        assert is_transient(caught.value)
        # Any other RuntimeError is still a bug, not hidden as an outage.
        monkeypatch.setattr(
            engine.dialect, "connect", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
        )
        with pytest.raises(RuntimeError):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        monkeypatch.setattr(engine.dialect, "connect", real)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
