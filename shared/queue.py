"""The Celery application and the names of its tasks (the queue protocol between services).

The broker is Redis in the distributed form and an embedded folder transport (``pacsfs://``, see embedded_broker)
on the embedded default: the same task code runs on both. Messages carry events (ids and keys only).
"""

from __future__ import annotations

from celery import Celery

from shared import embedded_broker
from shared.settings import Settings

INDEX_QUEUE = "pacs.index"
INDEX_INSTANCES_TASK = "pacs.index_instances"
RECORD_DUPLICATE_TASK = "pacs.record_duplicate"
MOVE_QUEUE = "pacs.move"
RUN_JOB_TASK = "pacs.run_job"


def broker_transport_options(settings: Settings) -> dict[str, object]:
    if settings.uses_embedded_broker:
        folder = settings.embedded_queue_dir
        for sub in ("messages", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,  # a waiting consumer is woken by the publisher (shared.doorbell), not by polling
        }
    visibility = settings.broker_visibility_timeout_seconds
    return {
        "visibility_timeout": visibility,
        # Unacknowledged messages past the timeout are restored every few seconds (kombu: every 100 s by default).
        "unacked_restore_interval": max(1, min(10, visibility // 3)),
        "unacked_restore_throttle": 1,
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "retry_on_timeout": False,
    }


def create_celery(settings: Settings) -> Celery:
    embedded_broker.register()
    app = Celery("pacs", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        broker_pool_limit=4,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # No service reads a task's result: the (disabled) result backend is built once for every thread. Celery
        # otherwise builds one per thread, and resolving it reads the entry points of every installed package
        # (~8 ms here, much of it holding the GIL): the SCP paid that in each association thread that published a
        # C-MOVE job, and once per process on its first stored instance.
        result_backend_thread_safe=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=INDEX_QUEUE,
        task_routes={INDEX_INSTANCES_TASK: {"queue": INDEX_QUEUE}, RECORD_DUPLICATE_TASK: {"queue": INDEX_QUEUE},
                     RUN_JOB_TASK: {"queue": MOVE_QUEUE}},
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    app.backend  # resolved now, at start  # noqa: B018
    return app
