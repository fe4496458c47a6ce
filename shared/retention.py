"""Retention: studies older than ``retention_days`` are deleted (shared.deletion), protected studies never.

Age of a study (``retention_basis``):
- ``received``: its last instance was received before ``now - retention_days`` (max of instances.received_at);
- ``study_date``: its StudyDate (YYYYMMDD, UTC calendar) is before the cutoff day; a study without a StudyDate is
  kept, and so is a study that received an instance within the last day (an old study being imported now).
Either way a study still receiving (an instance within the last ``RECEIVING_GRACE``) is never deleted.

``preview`` is the dry run (GET /api/retention/preview); ``run_retention`` deletes, one study per transaction, under
a PostgreSQL advisory lock so that only one of several `pacs indexer` runs it at a time (SQLite: one indexer).
``now`` is always given by the caller: the loop passes the clock, tests a fake one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, exists, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Instance, Series, Study
from shared.db.storage_models import ProtectedStudy
from shared.deletion import NotFound, StudyProtected, delete_entity
from shared.events import iso_utc
from shared.node_config import NodeConfig
from shared.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x5041_4353_5254  # "PACSRT"
RECEIVING_GRACE = timedelta(days=1)
PREVIEW_LIMIT = 1000


@dataclass(frozen=True)
class Candidate:
    study_instance_uid: str
    study_date: str
    last_received: datetime | None
    instances: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"study_instance_uid": self.study_instance_uid, "study_date": self.study_date,
                "last_received": iso_utc(self.last_received) if self.last_received else None,
                "instances": self.instances, "bytes": self.bytes}


@dataclass
class RetentionReport:
    enabled: bool
    basis: str
    days: int | None
    cutoff: datetime | None
    studies: list[Candidate] = field(default_factory=list)
    deleted: int = 0
    skipped: str | None = None  # why nothing ran ("locked": another indexer runs it)

    def as_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "basis": self.basis, "days": self.days,
                "cutoff": iso_utc(self.cutoff) if self.cutoff else None, "studies": len(self.studies),
                "instances": sum(item.instances for item in self.studies),
                "bytes": sum(item.bytes for item in self.studies),
                "candidates": [item.as_json() for item in self.studies]}


def candidates(session: Session, config: NodeConfig, now: datetime, limit: int | None = None) -> RetentionReport:
    days = config.retention_days
    report = RetentionReport(days is not None, config.retention_basis, days, None)
    if days is None:
        return report
    cutoff = now - timedelta(days=days)
    report.cutoff = cutoff
    last_received = func.max(Instance.received_at)
    statement = (
        select(Study.study_instance_uid, Study.study_date, last_received.label("last_received"),
               func.count(Instance.pk).label("instances"), func.coalesce(func.sum(Instance.size), 0).label("bytes"))
        .select_from(Study)
        .outerjoin(Series, Series.study_fk == Study.pk)
        .outerjoin(Instance, Instance.series_fk == Series.pk)
        .where(~exists().where(ProtectedStudy.study_instance_uid == Study.study_instance_uid))
        .group_by(Study.pk, Study.study_instance_uid, Study.study_date)
    )
    if config.retention_basis == "received":
        statement = (statement.where(Study.last_update < cutoff)  # last_update >= every instance's reception
                     .having(func.coalesce(last_received, Study.created_at) < cutoff)
                     .order_by(func.coalesce(last_received, Study.created_at), Study.study_instance_uid))
    else:
        statement = (statement.where(Study.study_date != "", Study.study_date < cutoff.strftime("%Y%m%d"),
                                     Study.last_update < now - RECEIVING_GRACE)
                     .having(func.coalesce(last_received, Study.created_at) < now - RECEIVING_GRACE)
                     .order_by(Study.study_date, Study.study_instance_uid))
    if limit is not None:
        statement = statement.limit(limit)
    report.studies = [Candidate(row.study_instance_uid, row.study_date, row.last_received, int(row.instances),
                                int(row.bytes)) for row in session.execute(statement)]
    return report


def preview(sessions: sessionmaker[Session], config: NodeConfig, now: datetime,
            limit: int = PREVIEW_LIMIT) -> RetentionReport:
    with sessions() as session:
        return candidates(session, config, now, limit)


def _received_since(session: Session, study_instance_uid: str, config: NodeConfig, now: datetime) -> bool:
    last_update = session.scalar(select(Study.last_update).where(Study.study_instance_uid == study_instance_uid))
    if last_update is None:
        return True
    limit = now - RECEIVING_GRACE
    if config.retention_basis == "received" and config.retention_days is not None:
        limit = min(limit, now - timedelta(days=config.retention_days))
    return last_update >= limit


@contextmanager
def retention_lock(engine: Engine) -> Iterator[bool]:
    """True when this process may run retention now (PostgreSQL: a session advisory lock; SQLite: always)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}))
        connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                connection.commit()


def run_retention(engine: Engine, sessions: sessionmaker[Session], store: ObjectStore, config: NodeConfig,
                  now: datetime, batch: int = 100) -> RetentionReport:
    """Delete what ``preview`` shows (at most ``batch`` studies per call), each study in its own transaction."""
    with retention_lock(engine) as acquired:
        if not acquired:
            report = RetentionReport(config.retention_days is not None, config.retention_basis,
                                     config.retention_days, None, skipped="locked")
            return report
        report = preview(sessions, config, now, batch)
        for candidate in report.studies:
            uid = candidate.study_instance_uid
            try:
                deleted = delete_entity(store, sessions, "study", uid, now, {
                    "action": "retention_deleted", "details": {
                        "actor": "retention", "basis": config.retention_basis, "days": config.retention_days}},
                    still_wanted=lambda session, uid=uid: not _received_since(session, uid, config, now))
            except (NotFound, StudyProtected):
                continue  # deleted or protected meanwhile
            except (SQLAlchemyError, StorageError) as exc:
                log.warning("retention.delete_failed error=%s", exc.__class__.__name__)
                continue
            if deleted is None:
                continue  # an instance arrived after the preview: keep it
            report.deleted += 1
        if report.deleted:
            log.info("retention.deleted studies=%d", report.deleted)
        return report
