"""Run one job: send its pending items in order, count each outcome, honour cancellation. Safe to run again:
only items still pending are sent, each counted once, and only by the run holding the job's lease
(services.mover.lease): a second delivery of the job while it runs does nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select, update

from services.mover.lease import LEASE_SECONDS, LeaseKeeper, claim, new_runner
from services.mover.sender import DestinationUnreachable, SendOutcome, StoreSender
from shared.db.models import Job, JobItem
from shared.events import utc_now
from shared.jobs import FINISHED_STATES, Destination, Item, fail_unfinished, ring_progress
from shared.runtime import Runtime

log = logging.getLogger(__name__)

CHUNK = 200
RECORD_BATCH = 128
RECORD_SECONDS = 0.2  # C-MOVE pending responses follow the counters at most this late
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


class Outcomes:
    """The outcomes of sub-operations, written in one transaction per RECORD_BATCH items or RECORD_SECONDS
    (whichever comes first), not one commit per instance. Each item is counted
    once: an item no longer pending (failed by a stall, counted by an earlier run) keeps the count it has. The relays
    of this data directory are rung after each write (shared.jobs)."""

    def __init__(self, runtime: Runtime, job_id: str) -> None:
        self._runtime, self._job_id = runtime, job_id
        self._waiting: dict[tuple[str, str], list[int]] = {}
        self._count = 0
        self._since = time.monotonic()

    def add(self, item_pk: int, outcome: str, reason: str) -> None:
        self._waiting.setdefault((outcome, reason), []).append(item_pk)
        self._count += 1
        if self._count >= RECORD_BATCH or time.monotonic() - self._since >= RECORD_SECONDS:
            self.flush()

    def flush(self, final_state: str | None = None) -> None:
        """Write the outcomes waiting, and the job's end (``final_state``) in the same transaction if given."""
        if self._waiting or final_state is not None:
            with self._runtime.sessions.begin() as session:
                for (outcome, reason), item_pks in self._waiting.items():
                    recorded = session.execute(update(JobItem).where(
                        JobItem.pk.in_(item_pks), JobItem.state == "pending").values(state=outcome, detail=reason))
                    if recorded.rowcount:
                        counter = COUNTER_OF[outcome]
                        session.execute(update(Job).where(Job.id == self._job_id).values(
                            {counter: getattr(Job, counter) + recorded.rowcount, "updated_at": utc_now()}))
                if final_state is not None:
                    session.execute(update(Job).where(Job.id == self._job_id, Job.state.not_in(FINISHED_STATES))
                                    .values(state=final_state, updated_at=utc_now(), finished_at=utc_now()))
            ring_progress(self._runtime.settings.data_dir)
        self._waiting, self._count, self._since = {}, 0, time.monotonic()


TAKEN_OVER, CANCELLED = "taken over", "cancelled"


class Turns:
    """Whether the job may go on to its next item: the lease must still be ours, and (looked at most every
    CANCEL_CHECK_SECONDS) the job must not have been cancelled. ``stopped`` says why it may not."""

    def __init__(self, runtime: Runtime, job_id: str, lease: LeaseKeeper) -> None:
        self._runtime, self._job_id, self._lease = runtime, job_id, lease
        self._next_cancel_check = 0.0
        self.stopped: str | None = None

    def go_on(self) -> bool:
        if self._lease.lost.is_set():
            self.stopped = TAKEN_OVER
        elif time.monotonic() >= self._next_cancel_check:
            if _cancel_requested(self._runtime, self._job_id):
                self.stopped = CANCELLED
            self._next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
        return self.stopped is None


def _cancel_requested(runtime: Runtime, job_id: str) -> bool:
    with runtime.sessions() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _final_state(stopped: str | None) -> str | None:
    """The state a run ends its job in: None when another run took it over (that run ends it)."""
    return None if stopped == TAKEN_OVER else "cancelled" if stopped == CANCELLED else "done"


def run_job(runtime: Runtime, job_id: str, spool_dir: Path, lease_seconds: float = LEASE_SECONDS) -> None:
    runner = new_runner()
    if not claim(runtime.sessions, job_id, runner, lease_seconds):
        log.info("mover.job_not_claimed job=%s (finished, unknown, or running elsewhere)", job_id)
        return
    with LeaseKeeper(runtime.sessions, job_id, runner, lease_seconds) as lease:
        _run_claimed(runtime, job_id, spool_dir, lease)


def _run_claimed(runtime: Runtime, job_id: str, spool_dir: Path, lease: LeaseKeeper) -> None:
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
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
        ring_progress(runtime.settings.data_dir)
        return
    turns = Turns(runtime, job_id, lease)
    outcomes = Outcomes(runtime, job_id)
    try:
        for item_pk, outcome, reason in sender.send_each(_pending_items(runtime, job_id), turns.go_on):
            outcomes.add(item_pk, outcome, reason)
        final_state = _final_state(turns.stopped)
        outcomes.flush(final_state)  # with the last outcomes, before the release: the requester is answered sooner
    finally:
        outcomes.flush()
        sender.close()
    if final_state is None:
        log.warning("mover.job_taken_over job=%s (stopping this run)", job_id)
    else:
        log.info("mover.%s job=%s", final_state, job_id)
