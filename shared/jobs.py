"""Jobs of C-STORE sub-operations (C-MOVE, REST sends): created by the SCP or the API, run by the mover.

The job row is also the progress channel: the mover updates its counters, the SCP reads them to send
C-MOVE pending responses, and a C-CANCEL sets ``cancel_requested`` for the mover to see. A mover on the same host
and data directory as the SCP rings its progress doorbells (shared.doorbell) whenever it has recorded outcomes or
ended a job, so the SCP reads the row at once instead of at its next look (services.scp.move.POLL_SECONDS): the
final C-MOVE response then follows the last sub-operation within a millisecond, not within 20 ms.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import doorbell
from shared.db.models import Job, JobItem
from shared.events import utc_now

FINISHED_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Item:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    object_key: str


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int
    calling_ae_title: str  # the node's AE title, or the modality entry's local AE title


@dataclass(frozen=True)
class Progress:
    state: str
    total: int
    completed: int
    failed: int
    warning: int
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.completed - self.failed - self.warning)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


def progress_doorbells(data_dir: Path) -> str:
    """The folder where the relays of running C-MOVEs list their doorbells."""
    return str(data_dir.resolve() / "jobs" / "doorbells")


def ring_progress(data_dir: Path) -> None:
    """Tell the relays of this data directory that a job's row changed (never raises; they look anyway)."""
    doorbell.ring_all(progress_doorbells(data_dir))


def create_job(session: Session, kind: str, destination: Destination, requested_by: str, items: list[Item]) -> str:
    job_id = uuid.uuid4().hex
    now = utc_now()
    session.add(Job(
        id=job_id, kind=kind, destination_ae_title=destination.ae_title, destination_host=destination.host,
        destination_port=destination.port, calling_ae_title=destination.calling_ae_title, requested_by=requested_by,
        state="queued", total=len(items), completed=0, failed=0, warning=0, cancel_requested=False, error="",
        created_at=now, updated_at=now,
    ))
    session.flush()
    if items:
        session.execute(JobItem.__table__.insert(), [
            dict(job_id=job_id, position=position, sop_instance_uid=item.sop_instance_uid,
                 sop_class_uid=item.sop_class_uid, transfer_syntax=item.transfer_syntax,
                 object_key=item.object_key, state="pending", detail="")
            for position, item in enumerate(items)
        ])
    return job_id


def progress(session: Session, job_id: str, with_failed_uids: bool = False) -> Progress | None:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    failed_uids: list[str] = []
    if with_failed_uids and job.failed:
        failed_uids = list(session.scalars(select(JobItem.sop_instance_uid).where(
            JobItem.job_id == job_id, JobItem.state == "failed").order_by(JobItem.position)))
    return Progress(job.state, job.total, job.completed, job.failed, job.warning, failed_uids)


def request_cancel(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=utc_now()))


def fail_unfinished(session: Session, job_id: str, reason: str) -> None:
    """Give up on a job nobody runs: every pending sub-operation counts as failed."""
    pending = session.scalar(select(Job).where(Job.id == job_id))
    if pending is None or pending.state in FINISHED_STATES:
        return
    session.execute(update(JobItem).where(JobItem.job_id == job_id, JobItem.state == "pending")
                    .values(state="failed", detail=reason))
    remaining = pending.total - pending.completed - pending.failed - pending.warning
    session.execute(update(Job).where(Job.id == job_id).values(
        state="failed", failed=Job.failed + remaining, error=reason, updated_at=utc_now(), finished_at=utc_now()))
