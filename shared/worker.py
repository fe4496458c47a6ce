"""Start a Celery worker on one queue (the indexer's and the mover's entry points share this)."""

from __future__ import annotations

import warnings

from celery import Celery
from celery.platforms import SecurityWarning


def run_celery_worker(app: Celery, queue: str, pool: str, concurrency: int, log_level: str) -> None:
    """Blocks until the worker stops (SIGTERM: warm shutdown, running tasks finish)."""
    warnings.filterwarnings("ignore", category=SecurityWarning)  # containers run as non-root; dev boxes as root
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
