"""Celery tasks: thin wrappers around the plain indexing functions (late acks; a transient failure is retried for a
while, services/indexer/retry_policy.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from services.indexer.indexing import TransientIndexError, index_events, record_duplicates
from services.indexer.retry_policy import next_retry_in
from shared.events import DuplicateReceived, InstanceStored
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.runtime import Runtime

log = logging.getLogger(__name__)

TASK_OPTIONS: dict[str, Any] = dict(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by time instead (retry_policy)
)


def _retry_or_drop(task: Any, exc: TransientIndexError, first_failed_at: float | None, count: int) -> None:
    """Schedule the task's next attempt (raises Celery's Retry), or log and return once it has been failing for
    too long: its instances keep their pending markers, which the sweeper hands over again."""
    now = time.time()
    first = first_failed_at if first_failed_at is not None else now
    wait = next_retry_in(task.request.retries, now - first)
    if wait is None:
        log.warning("index.retries_ended count=%d failing_seconds=%.0f error=%s (the sweeper hands them over again)",
                    count, now - first, exc)
        return
    raise task.retry(exc=exc, countdown=wait, kwargs={"first_failed_at": first})


def register_tasks(app: Celery, runtime: Callable[[], Runtime]) -> None:
    @app.task(name=INDEX_INSTANCES_TASK, **TASK_OPTIONS)
    def index_instances(self: Any, events: list[dict[str, Any]], first_failed_at: float | None = None) -> None:
        try:
            result = index_events(runtime(), [InstanceStored.model_validate(event) for event in events])
        except TransientIndexError as exc:
            _retry_or_drop(self, exc, first_failed_at, len(events))
            return
        if (self.request.delivery_info or {}).get("redelivered"):  # Redis handed it out again (visibility timeout)
            log.info("index.redelivered indexed=%d already=%d", result.indexed, result.already_indexed)
        log.debug("index.batch indexed=%d already=%d dead_lettered=%d",
                  result.indexed, result.already_indexed, result.dead_lettered)

    @app.task(name=RECORD_DUPLICATE_TASK, **TASK_OPTIONS)
    def record_duplicate(self: Any, events: list[dict[str, Any]], first_failed_at: float | None = None) -> None:
        try:
            record_duplicates(runtime(), [DuplicateReceived.model_validate(event) for event in events])
        except TransientIndexError as exc:
            _retry_or_drop(self, exc, first_failed_at, len(events))
