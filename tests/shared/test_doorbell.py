"""Doorbells (shared.doorbell): a waiting consumer of the embedded queue sleeps until a publisher rings."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.doorbell import Doorbell, ring_all


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "doorbells"


@pytest.fixture
def bell(folder: Path) -> Iterator[Doorbell]:
    bell = Doorbell(str(folder))
    yield bell
    bell.close()


def test_a_ring_wakes_a_waiting_consumer(folder: Path, bell: Doorbell) -> None:
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(bell.wait(60)))
    waiter.start()
    ring_all(str(folder))
    waiter.join(timeout=10)
    assert not waiter.is_alive() and woken == [True]


def test_a_wait_that_nobody_rings_ends_at_its_timeout(bell: Doorbell) -> None:
    assert bell.wait(0.05) is False


def test_rings_that_came_before_the_wait_wake_it_once(folder: Path, bell: Doorbell) -> None:
    for _ in range(3):
        ring_all(str(folder))
    assert bell.wait(10) is True
    assert bell.wait(0.05) is False  # every pending ring was taken by the first wait


def test_every_listed_consumer_is_rung(folder: Path, bell: Doorbell) -> None:
    other = Doorbell(str(folder))
    try:
        ring_all(str(folder))
        assert bell.wait(10) and other.wait(10)
    finally:
        other.close()


def test_a_consumer_lists_itself_while_it_waits_and_no_longer_once_closed(folder: Path) -> None:
    bell = Doorbell(str(folder))
    assert len(list(folder.iterdir())) == 1
    bell.close()
    assert list(folder.iterdir()) == []


def test_the_listing_of_a_consumer_whose_process_ended_is_removed_by_the_next_ring(folder: Path,
                                                                                  bell: Doorbell) -> None:
    gone = folder / uuid.uuid4().hex  # listed, but no socket holds its name any more
    gone.touch()
    ring_all(str(folder))
    assert not gone.exists()
    assert bell.wait(10)  # the live one was rung all the same


def test_ringing_where_nobody_listens_does_nothing(tmp_path: Path) -> None:
    ring_all(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    ring_all(str(tmp_path / "empty"))
