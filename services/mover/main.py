"""`pacs mover`: a Celery worker on the move queue that runs jobs (C-MOVE and REST sends), plus a heartbeat and
the orphan pass (jobs whose mover stopped or whose message was lost are handed to the queue again)."""

from __future__ import annotations

from typing import Any

from services.mover.lease import OrphanPass
from services.mover.runner import run_job
from shared.heartbeat import Heartbeat
from shared.queue import MOVE_QUEUE, RUN_JOB_TASK
from shared.runtime import ProcessRuntime
from shared.settings import Settings
from shared.worker import run_celery_worker

CONCURRENT_JOBS = 4  # jobs run side by side in one mover process (threads: the work waits on the network)


def run_mover(settings: Settings) -> int:
    runtime_of_process = ProcessRuntime(settings)
    runtime = runtime_of_process()
    spool_dir = settings.data_dir.resolve() / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)

    @runtime.celery.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run(self: Any, job_id: str) -> None:
        run_job(runtime_of_process(), job_id, spool_dir)

    heartbeat = Heartbeat("mover", runtime.sessions, settings.heartbeat_interval_seconds,
                          details=lambda: {"concurrent_jobs": CONCURRENT_JOBS})
    orphans = OrphanPass(runtime.sessions, lambda job_id: runtime.celery.send_task(RUN_JOB_TASK, args=[job_id],
                                                                                   retry=False))
    heartbeat.start()
    orphans.start()
    run_celery_worker(runtime.celery, MOVE_QUEUE, "threads", CONCURRENT_JOBS, settings.log_level)
    orphans.stop()
    heartbeat.stop()
    return 0
