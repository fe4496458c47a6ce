"""`pacs indexer`: a Celery worker on the index queue, plus the sweeper, the event threads (study-stable
detection, auto-forwards, webhook deliveries: services/indexer/events.py) and a heartbeat."""

from __future__ import annotations

from services.indexer.events import EventThreads
from services.indexer.lifecycle import Lifecycle, LifecycleThread
from services.indexer.sweeper import Sweeper, SweeperThread
from services.indexer.tasks import register_tasks
from shared.heartbeat import Heartbeat
from shared.queue import INDEX_INSTANCES_TASK, INDEX_QUEUE, RUN_JOB_TASK
from shared.runtime import ProcessRuntime
from shared.settings import Settings
from shared.worker import run_celery_worker


def run_indexer(settings: Settings) -> int:
    runtime_of_process = ProcessRuntime(settings)
    runtime = runtime_of_process()
    app = runtime.celery
    register_tasks(app, runtime_of_process)

    def publish(payloads: list[dict[str, object]]) -> None:
        app.send_task(INDEX_INSTANCES_TASK, args=[payloads], retry=False)

    sweeper = SweeperThread(
        Sweeper(runtime.store, runtime.ledger, publish, settings.sweep_grace_seconds, settings.indexer_batch_size),
        settings.sweep_interval_seconds,
    )
    heartbeat = Heartbeat("indexer", runtime.sessions, settings.heartbeat_interval_seconds,
                          details=lambda: {"concurrency": settings.indexer_concurrency})
    events = EventThreads(runtime, lambda job_id: app.send_task(RUN_JOB_TASK, args=[job_id], retry=False))
    lifecycle = LifecycleThread(Lifecycle(runtime))  # unfinished deletions, retention (services/indexer/lifecycle.py)
    sweeper.start()
    heartbeat.start()
    events.start()
    lifecycle.start()
    pool = "solo" if settings.indexer_concurrency == 1 else "prefork"
    run_celery_worker(app, INDEX_QUEUE, pool, settings.indexer_concurrency, settings.log_level)
    lifecycle.stop()
    events.stop()
    sweeper.stop()
    heartbeat.stop()
    return 0
