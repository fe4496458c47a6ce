"""Auto-forwards: turn pending ``forwards`` rows into mover jobs, follow the jobs, retry what failed.

A pending forward is claimed (PostgreSQL: FOR UPDATE SKIP LOCKED, so several indexers never run the same one),
resolved to the held instances (the whole study, or the instances the rule matched), and sent as a job of kind
``auto-forward`` to the rule's destination modality (calling it with the modality's ``local_ae_title`` or the
node's AE title), exactly as a REST send: the job is visible in ``GET /api/jobs``. When the job ends with failed
instances (or the destination could not be reached), the forward is retried with those instances only, after
``forward_retry_seconds`` (doubling, at most a day), until ``forward_max_attempts`` jobs ran; then it is
``failed``. A forward whose rule's destination is not a registered modality fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Job, JobItem, Modality
from shared.db.routing_models import Forward, RoutingRule
from shared.events import utc_now
from shared.jobs import FINISHED_STATES, Destination, create_job, fail_unfinished
from shared.node_config import NodeConfig, modality_entry
from shared.routing import forward_items, retry_delay_seconds

log = logging.getLogger(__name__)

CLAIM = 20
LEASE = timedelta(minutes=2)
MAX_RETRY_SECONDS = 86_400


class Forwarder:
    def __init__(self, sessions: sessionmaker[Session], node_ae_title: str, publish_job: Callable[[str], None]) -> None:
        self._sessions = sessions
        self._node_ae_title = node_ae_title
        self._publish_job = publish_job

    def run_pass(self, config: NodeConfig) -> None:
        for forward_pk in self._claim():
            self._start(forward_pk, config)
        self._follow(config)

    def _claim(self) -> list[int]:
        now = utc_now()
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(Forward).where(Forward.state == "pending", Forward.next_attempt_at <= now,
                                      (Forward.claimed_until.is_(None)) | (Forward.claimed_until < now))
                .order_by(Forward.next_attempt_at).limit(CLAIM).with_for_update(skip_locked=True)).all()
            for row in rows:
                row.claimed_until = now + LEASE
            return [row.pk for row in rows]

    def _start(self, forward_pk: int, config: NodeConfig) -> None:
        with self._sessions.begin() as session:
            forward = session.get(Forward, forward_pk)
            if forward is None or forward.state != "pending":
                return
            rule = session.get(RoutingRule, forward.rule_id)
            modality = session.get(Modality, rule.destination) if rule is not None else None
            if rule is not None and not rule.enabled:
                self._finish(forward, "failed", "the rule was disabled")
                return
            if rule is None or modality is None:
                self._finish(forward, "failed", "the rule's destination is not a registered modality")
                return
            entry = modality_entry(modality)
            destination = Destination(entry.ae_title, entry.host, entry.port,
                                      entry.local_ae_title or self._node_ae_title)
            items = forward_items(session, forward.study_instance_uid, forward.sop_instance_uids)
            if not items:
                self._finish(forward, "done", "nothing held to send")
                return
            job_id = create_job(session, "auto-forward", destination, f"rule:{rule.name}"[:64], items)  # type: ignore[union-attr]
            forward.job_id, forward.state, forward.claimed_until = job_id, "running", None
            forward.attempts += 1
            forward.updated_at = utc_now()
        try:
            self._publish_job(job_id)
        except Exception as exc:  # the broker refused: the job fails, the forward is retried (``_follow``)
            log.warning("forward.queue_unavailable error=%s", exc.__class__.__name__)
            with self._sessions.begin() as session:
                fail_unfinished(session, job_id, "the job could not be queued")
        log.info("forward.started job=%s instances=%d", job_id, len(items))

    def _follow(self, config: NodeConfig) -> None:
        with self._sessions() as session:
            running = session.execute(
                select(Forward.pk, Forward.job_id, Job.state, Job.failed, Job.completed, Job.warning, Job.total)
                .join(Job, Job.id == Forward.job_id)
                .where(Forward.state == "running", Job.state.in_(FINISHED_STATES)).limit(100)).all()
        for row in running:
            with self._sessions.begin() as session:
                forward = session.get(Forward, row.pk, with_for_update={"skip_locked": True})
                if forward is None or forward.state != "running" or forward.job_id != row.job_id:
                    continue
                if row.state == "done" and row.failed == 0:
                    self._finish(forward, "done", "")
                    continue
                if row.state == "cancelled":
                    self._finish(forward, "failed", "its job was cancelled")
                    continue
                failed = list(session.scalars(select(JobItem.sop_instance_uid).where(
                    JobItem.job_id == row.job_id, JobItem.state == "failed").order_by(JobItem.position)))
                error = session.scalar(select(Job.error).where(Job.id == row.job_id)) or ""
                reason = f"{len(failed)} of {row.total} instances failed" + (f" ({error})" if error else "")
                if forward.attempts >= config.forward_max_attempts:
                    self._finish(forward, "failed", reason)
                    continue
                delay = retry_delay_seconds(config.forward_retry_seconds, forward.attempts, MAX_RETRY_SECONDS)
                forward.state, forward.sop_instance_uids = "pending", failed
                forward.next_attempt_at = utc_now() + timedelta(seconds=delay)
                forward.last_error, forward.updated_at = reason, utc_now()
                log.info("forward.retry_scheduled job=%s failed=%d delay_seconds=%d", row.job_id, len(failed), delay)

    @staticmethod
    def _finish(forward: Forward, state: str, error: str) -> None:
        forward.state, forward.last_error, forward.claimed_until, forward.updated_at = state, error, None, utc_now()

