"""An indexing task retries a transient failure for a fixed time, not a fixed count, and the sweeper waits longer."""

from __future__ import annotations

import logging
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest

from services.indexer.indexing import TransientIndexError
from services.indexer.retry_policy import (
    BACKOFF_MAX_SECONDS,
    REPUBLISH_BACKOFF_SECONDS,
    TRANSIENT_RETRY_SECONDS,
    next_retry_in,
)
from services.indexer.tasks import _retry_or_drop


def attempts_until_dropped(seed: int) -> list[float]:
    """Moments (seconds after the first failure) of every attempt of a task that fails each time."""
    rng = random.Random(seed)
    moments, retries = [0.0], 0
    while (wait := next_retry_in(retries, moments[-1], rng)) is not None:
        moments.append(moments[-1] + wait)
        retries += 1
    return moments


def test_the_waits_are_drawn_below_a_ceiling_that_doubles_up_to_its_maximum() -> None:
    rng = random.Random(1)
    for retries, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (9, 20), (400, 20)]:
        waits = [next_retry_in(retries, 0.0, rng) for _ in range(200)]
        assert all(wait is not None and 0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.9  # type: ignore[operator]


def test_a_task_keeps_retrying_for_the_whole_retry_time_whatever_the_draws() -> None:
    for seed in range(200):
        moments = attempts_until_dropped(seed)
        assert TRANSIENT_RETRY_SECONDS <= moments[-1] < TRANSIENT_RETRY_SECONDS + BACKOFF_MAX_SECONDS


@pytest.mark.parametrize("outage_seconds", [5.0, 30.0, 100.0, 239.0])
def test_after_an_outage_shorter_than_the_retry_time_the_next_attempt_comes_within_the_ceiling(
        outage_seconds: float) -> None:
    for seed in range(100):
        after_outage = [moment for moment in attempts_until_dropped(seed) if moment >= outage_seconds]
        assert after_outage and after_outage[0] - outage_seconds <= BACKOFF_MAX_SECONDS


def test_the_sweeper_hands_an_instance_over_again_only_after_its_task_stopped_retrying() -> None:
    assert TRANSIENT_RETRY_SECONDS + BACKOFF_MAX_SECONDS < REPUBLISH_BACKOFF_SECONDS


class RetryRequested(Exception):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options


class FailingTask:
    """What _retry_or_drop uses of a bound Celery task: its retry count and retry()."""

    def __init__(self, retries: int) -> None:
        self.request = SimpleNamespace(retries=retries)

    def retry(self, **options: Any) -> RetryRequested:
        return RetryRequested(**options)


def test_a_failing_task_is_retried_and_carries_the_moment_of_its_first_failure() -> None:
    failure = TransientIndexError("index database unavailable (OperationalError)")
    with pytest.raises(RetryRequested) as first:
        _retry_or_drop(FailingTask(retries=0), failure, None, count=3)
    first_failed_at = first.value.options["kwargs"]["first_failed_at"]
    assert abs(first_failed_at - time.time()) < 5 and 0 <= first.value.options["countdown"] <= 1
    with pytest.raises(RetryRequested) as later:
        _retry_or_drop(FailingTask(retries=6), failure, first_failed_at, count=3)
    assert later.value.options["kwargs"] == {"first_failed_at": first_failed_at}
    assert later.value.options["exc"] is failure and 0 <= later.value.options["countdown"] <= 20


def test_a_task_failing_for_longer_than_the_retry_time_is_dropped_and_left_to_the_sweeper(
        caplog: pytest.LogCaptureFixture) -> None:
    failure = TransientIndexError("index database unavailable (OperationalError)")
    with caplog.at_level(logging.WARNING, logger="services.indexer.tasks"):
        _retry_or_drop(FailingTask(retries=12), failure, time.time() - TRANSIENT_RETRY_SECONDS - 1, count=7)
    assert "index.retries_ended count=7" in caplog.text
