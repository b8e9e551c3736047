"""A long garbage-collector pause is logged with its generation (kernel/gc_pauses.py)."""

from __future__ import annotations

import gc
import logging

import pytest

from snapshoe.kernel import gc_pauses


@pytest.fixture(autouse=True)
def _uninstall() -> object:
    thresholds = gc.get_threshold()
    yield None
    gc.set_threshold(*thresholds)
    if gc_pauses._watch in gc.callbacks:
        gc.callbacks.remove(gc_pauses._watch)


def test_young_collections_are_rarer_than_cpythons_default() -> None:
    gc_pauses.install()
    assert gc.get_threshold() == gc_pauses.THRESHOLDS
    assert gc.get_threshold()[0] >= 50 * 700


def test_a_collection_over_the_bound_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gc_pauses.install()
    gc_pauses.install()  # idempotent
    assert gc.callbacks.count(gc_pauses._watch) == 1
    monkeypatch.setattr(gc_pauses, "LONG_PAUSE_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="snapshoe.gc"):
        gc.collect()
    assert any("generation 2" in r.getMessage() for r in caplog.records)


def test_a_short_collection_is_not(caplog: pytest.LogCaptureFixture) -> None:
    gc_pauses.install()
    with caplog.at_level(logging.WARNING, logger="snapshoe.gc"):
        gc.collect(0)
    assert not [r for r in caplog.records if r.name == "snapshoe.gc"]
