"""One mover runs a job at a time, and a job whose mover stopped is taken over.

The broker can hand the same job to two movers: Redis gives an unacknowledged message to another worker once the
visibility timeout passed (a job of thousands of instances runs longer than that), and a restarted broker or a
killed worker can lose or repeat it. So the job row carries a lease: a run claims the job only when nobody holds a
live lease, renews it every LEASE_SECONDS / 6 from a thread of its own (a single slow sub-operation does not let it
lapse), and stops after the current sub-operation if another run took the job over. The orphan pass of each mover
hands jobs again to the queue when their lease lapsed (their mover died) or when they stayed queued too long (their
message was lost), so every job finishes without anyone re-issuing it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Job
from shared.events import utc_now
from shared.jobs import FINISHED_STATES

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
QUEUED_GRACE_SECONDS = 120.0  # a job still queued after this long lost its message: hand it over again
ORPHAN_CHECK_SECONDS = 30.0


def claim(sessions: sessionmaker[Session], job_id: str, runner: str, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Take the job for ``runner`` unless it is finished or another run holds a live lease."""
    now = utc_now()
    with sessions.begin() as session:
        taken = session.execute(
            update(Job).where(Job.id == job_id, Job.state.not_in(FINISHED_STATES),
                              or_(Job.runner.is_(None), Job.lease_until.is_(None), Job.lease_until < now))
            .values(state="running", runner=runner, lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now))
        return bool(taken.rowcount)


def renew(sessions: sessionmaker[Session], job_id: str, runner: str, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Extend the lease; False when another run took the job over (or it finished)."""
    now = utc_now()
    with sessions.begin() as session:
        renewed = session.execute(
            update(Job).where(Job.id == job_id, Job.runner == runner, Job.state.not_in(FINISHED_STATES))
            .values(lease_until=now + timedelta(seconds=lease_seconds)))
        return bool(renewed.rowcount)


def new_runner() -> str:
    return uuid.uuid4().hex


class LeaseKeeper:
    """Renews a claimed job's lease in the background; ``lost`` tells the run to stop."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, runner: str,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self._sessions, self._job_id, self._runner, self._lease = sessions, job_id, runner, lease_seconds
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 6):
            try:
                if not renew(self._sessions, self._job_id, self._runner, self._lease):
                    log.warning("mover.lease_lost job=%s", self._job_id)
                    self.lost.set()
                    return
            except SQLAlchemyError as exc:  # the index is down for a moment: try again at the next renewal
                log.warning("mover.lease_not_renewed job=%s error=%s", self._job_id, exc.__class__.__name__)


def hand_over_orphans(sessions: sessionmaker[Session], grace_seconds: float = QUEUED_GRACE_SECONDS) -> list[str]:
    """Jobs nobody runs, untouched for ``grace_seconds``: running with a lapsed lease, or still queued (a message
    lost, or a long backlog: a repeated message finds the job held and does nothing). Each is touched, so that it
    is handed over again at most once per grace period."""
    now = utc_now()
    quiet = Job.updated_at < now - timedelta(seconds=grace_seconds)
    with sessions.begin() as session:
        orphans = list(session.scalars(select(Job.id).where(quiet, or_(
            (Job.state == "running") & or_(Job.lease_until.is_(None), Job.lease_until < now),
            Job.state == "queued",
        )).order_by(Job.created_at).limit(100)))
        if orphans:
            session.execute(update(Job).where(Job.id.in_(orphans)).values(updated_at=now))
    return orphans


class OrphanPass:
    """Every ORPHAN_CHECK_SECONDS, hands orphaned jobs to the queue again (any mover may claim them)."""

    def __init__(self, sessions: sessionmaker[Session], publish: Callable[[str], None],
                 interval_seconds: float = ORPHAN_CHECK_SECONDS, grace_seconds: float = QUEUED_GRACE_SECONDS) -> None:
        self._sessions, self._publish, self._interval, self._grace = sessions, publish, interval_seconds, grace_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def run_once(self) -> int:
        orphans = hand_over_orphans(self._sessions, self._grace)
        for job_id in orphans:
            self._publish(job_id)
        if orphans:
            log.info("mover.orphans_handed_over count=%d", len(orphans))
        return len(orphans)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except Exception as exc:  # index or broker down: next pass
                log.warning("mover.orphan_pass_failed error=%s", exc.__class__.__name__)
