"""Celery tasks: thin wrappers around the plain indexing functions (late acks, bounded retries)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from services.indexer.indexing import TransientIndexError, index_events, record_duplicates
from shared.events import DuplicateReceived, InstanceStored
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.runtime import Runtime

log = logging.getLogger(__name__)

RETRY_OPTIONS: dict[str, Any] = dict(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientIndexError,),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=8,  # then the task is dropped; the pending markers bring the instances back (sweeper)
)


def register_tasks(app: Celery, runtime: Callable[[], Runtime]) -> None:
    @app.task(name=INDEX_INSTANCES_TASK, **RETRY_OPTIONS)
    def index_instances(self: Any, events: list[dict[str, Any]]) -> dict[str, int]:
        result = index_events(runtime(), [InstanceStored.model_validate(event) for event in events])
        if (self.request.delivery_info or {}).get("redelivered"):  # Redis handed it out again (visibility timeout)
            log.info("index.redelivered indexed=%d already=%d", result.indexed, result.already_indexed)
        log.debug("index.batch indexed=%d already=%d dead_lettered=%d",
                 result.indexed, result.already_indexed, result.dead_lettered)
        return {"indexed": result.indexed}

    @app.task(name=RECORD_DUPLICATE_TASK, **RETRY_OPTIONS)
    def record_duplicate(self: Any, events: list[dict[str, Any]]) -> None:
        record_duplicates(runtime(), [DuplicateReceived.model_validate(event) for event in events])
