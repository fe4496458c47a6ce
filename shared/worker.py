"""Start a Celery worker on one queue (the indexer's and the mover's entry points share this)."""

from __future__ import annotations

import warnings
from typing import Any

from celery import Celery, platforms
from celery.platforms import SecurityWarning
from celery.signals import worker_process_init, worker_ready

from shared import collector


def _settle_collector(**_signal: Any) -> None:
    collector.settle()


def _keep_process_title(*_arguments: Any, **_options: Any) -> None:
    """Celery retitles its processes ("[celeryd: ...] -active- (...)") when setproctitle is installed (it is:
    services.forked_children): ps keeps showing the service's own command line, as for every other service."""


def run_celery_worker(app: Celery, queue: str, pool: str, concurrency: int, log_level: str) -> None:
    """Blocks until the worker stops (SIGTERM: warm shutdown, running tasks finish)."""
    warnings.filterwarnings("ignore", category=SecurityWarning)  # containers run as non-root; dev boxes as root
    platforms.set_mp_process_title = _keep_process_title  # looked up at each call, by the worker and its pool
    # Once the worker is built (solo pool: it runs the tasks), and in each prefork child once it is.
    worker_ready.connect(_settle_collector, weak=False, dispatch_uid="pacs.settle_collector")
    worker_process_init.connect(_settle_collector, weak=False, dispatch_uid="pacs.settle_collector_in_child")
    app.worker_main(argv=[
        "--quiet",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={queue}",
        f"--loglevel={log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ])
