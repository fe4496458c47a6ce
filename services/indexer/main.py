"""`pacs indexer`: a Celery worker on the index queue, plus the sweeper and a heartbeat."""

from __future__ import annotations

import os
import threading
import warnings

from celery.platforms import SecurityWarning

from services.indexer.sweeper import Sweeper, SweeperThread
from services.indexer.tasks import register_tasks
from shared.heartbeat import Heartbeat
from shared.queue import INDEX_INSTANCES_TASK, INDEX_QUEUE
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings


class ProcessRuntime:
    """One runtime per process: a forked worker child builds its own (no shared connections)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __call__(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime = build_runtime(self._settings)
                self._pid = os.getpid()
            return self._runtime


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
    sweeper.start()
    heartbeat.start()
    warnings.filterwarnings("ignore", category=SecurityWarning)  # containers run as non-root; dev boxes as root
    pool = "solo" if settings.indexer_concurrency == 1 else "prefork"
    app.worker_main(argv=[
        "--quiet",
        "worker",
        f"--pool={pool}",
        f"--concurrency={settings.indexer_concurrency}",
        f"--queues={INDEX_QUEUE}",
        f"--loglevel={settings.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ])
    sweeper.stop()
    heartbeat.stop()
    return 0
