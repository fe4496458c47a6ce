"""shared.collector: what a service built at start-up is left out of the collector's walks; cycles are still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared import collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def settled() -> Iterator[None]:
    threshold = gc.get_threshold()
    collector.settle()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_exists_and_raises_the_youngest_threshold(settled: None) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == collector.GENERATION0_THRESHOLD


def test_a_cycle_made_after_settling_is_still_collected(settled: None) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    alive = weakref.ref(first)
    del first, second
    gc.collect()
    assert alive() is None


def test_settling_is_logged_with_the_frozen_count(settled: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="shared.collector"):
        collector.settle()
    assert any(record.getMessage().startswith("collector.settled frozen=") for record in caplog.records)
