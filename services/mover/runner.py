"""Run one job: send its pending items in order, count each outcome, honour cancellation. Safe to run again:
only items still pending are sent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select, update

from services.mover.sender import DestinationUnreachable, SendOutcome, StoreSender
from shared.db.models import Job, JobItem
from shared.events import utc_now
from shared.jobs import FINISHED_STATES, Destination, Item, fail_unfinished
from shared.runtime import Runtime

log = logging.getLogger(__name__)

CHUNK = 200
CANCEL_CHECK_SECONDS = 0.25
COUNTER_OF = {SendOutcome.COMPLETED: "completed", SendOutcome.WARNING: "warning", SendOutcome.FAILED: "failed"}


def _pending_items(runtime: Runtime, job_id: str) -> Iterator[tuple[int, Item]]:
    """Pending items in order, read a chunk at a time (memory does not grow with the job)."""
    last = -1
    while True:
        with runtime.sessions() as session:
            rows = session.execute(
                select(JobItem.pk, JobItem.position, JobItem.sop_instance_uid, JobItem.sop_class_uid,
                       JobItem.transfer_syntax, JobItem.object_key)
                .where(JobItem.job_id == job_id, JobItem.state == "pending", JobItem.position > last)
                .order_by(JobItem.position).limit(CHUNK)).all()
        if not rows:
            return
        for row in rows:
            last = row.position
            yield row.pk, Item(row.sop_instance_uid, row.sop_class_uid, row.transfer_syntax, row.object_key)


def _record(runtime: Runtime, job_id: str, item_pk: int, outcome: str, reason: str) -> None:
    counter = COUNTER_OF[outcome]
    with runtime.sessions.begin() as session:
        session.execute(update(JobItem).where(JobItem.pk == item_pk).values(state=outcome, detail=reason))
        session.execute(update(Job).where(Job.id == job_id).values(
            {counter: getattr(Job, counter) + 1, "updated_at": utc_now()}))


def _cancel_requested(runtime: Runtime, job_id: str) -> bool:
    with runtime.sessions() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _finish(runtime: Runtime, job_id: str, state: str, error: str = "") -> None:
    with runtime.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            state=state, error=error, updated_at=utc_now(), finished_at=utc_now()))


def run_job(runtime: Runtime, job_id: str, spool_dir: Path) -> None:
    with runtime.sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is None or job.state in FINISHED_STATES:
            return
        job.state, job.updated_at = "running", utc_now()
        destination = Destination(job.destination_ae_title, job.destination_host, job.destination_port,
                                  job.calling_ae_title)
    with runtime.sessions() as session:
        kinds = [Item("", row.sop_class_uid, row.transfer_syntax, "") for row in session.execute(
            select(JobItem.sop_class_uid, JobItem.transfer_syntax).where(JobItem.job_id == job_id).distinct())]
    try:
        sender = StoreSender(runtime.store, destination, kinds, spool_dir)
    except DestinationUnreachable as exc:
        log.warning("mover.destination_unreachable job=%s", job_id)
        with runtime.sessions.begin() as session:
            fail_unfinished(session, job_id, str(exc))
        return
    next_cancel_check = 0.0
    try:
        for item_pk, item in _pending_items(runtime, job_id):
            if time.monotonic() >= next_cancel_check:
                if _cancel_requested(runtime, job_id):
                    _finish(runtime, job_id, "cancelled")
                    log.info("mover.cancelled job=%s", job_id)
                    return
                next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
            if not sender.alive:
                _record(runtime, job_id, item_pk, SendOutcome.FAILED, "association with the destination lost")
                continue
            outcome, reason = sender.send(item)
            _record(runtime, job_id, item_pk, outcome, reason)
    finally:
        sender.close()
    _finish(runtime, job_id, "done")
    log.info("mover.done job=%s", job_id)
