"""Study-stable detection: a study with no new instance indexed for ``study_stable_seconds`` emits study_stable.

One pass is one transaction: it finds the studies whose ``last_update`` is older than the cutoff and newer than
what was last emitted for them (table ``study_stability``), records the emission there and writes the event's
outbox rows (webhook deliveries, forwards of the study_stable rules) in the same transaction. So an event is
emitted once per quiet period, survives restarts, and again when new instances arrive and the study becomes
quiet once more. With several indexers on PostgreSQL only one runs a pass at a time (a transaction-scoped
advisory lock); SQLite has one indexer.

A pass looks at studies updated in a window (the last hour before the cutoff); after a start, a lost lock or a
database outage it first catches up from the newest emission recorded, so its cost follows recent activity,
not the size of the archive.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Instance, Series, Study
from shared.db.routing_models import StudyStability
from shared.events import iso_utc, utc_now
from shared.routing import active_rules, add_forward, matches, study_subject
from shared.webhooks import deliver_to_each, subscribers

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x5041_4353_5354  # "PACSST"
WINDOW = timedelta(hours=1)
BATCH = 200


class StabilityDetector:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._caught_up = False

    def lost_track(self) -> None:
        """After an outage: the next pass catches up from the newest recorded emission."""
        self._caught_up = False

    def run_pass(self, stable_seconds: int, now: datetime | None = None) -> int:
        """Emit study_stable for the studies that became stable; returns how many."""
        now = now or utc_now()
        cutoff = now - timedelta(seconds=stable_seconds)
        with self._sessions.begin() as session:
            if not self._lock(session):
                self._caught_up = False
                return 0
            low = cutoff - WINDOW if self._caught_up else self._catch_up_from(session)
            rows = self._stable_studies(session, low, cutoff)
            for row in rows:
                self._emit(session, row.pk, row.study_instance_uid, row.last_update, now)
        if len(rows) < BATCH:
            self._caught_up = True
        if rows:
            log.info("stable.emitted studies=%d", len(rows))
        return len(rows)

    def _lock(self, session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True
        return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}))

    def _catch_up_from(self, session: Session) -> datetime | None:
        newest = session.scalar(select(func.max(StudyStability.last_update)))
        return None if newest is None else newest - WINDOW

    def _stable_studies(self, session: Session, low: datetime | None, cutoff: datetime) -> list[Any]:
        statement = (select(Study.pk, Study.study_instance_uid, Study.last_update)
                     .outerjoin(StudyStability, StudyStability.study_fk == Study.pk)
                     .where(Study.last_update <= cutoff,
                            (StudyStability.study_fk.is_(None)) | (StudyStability.last_update < Study.last_update))
                     .order_by(Study.last_update).limit(BATCH))
        if low is not None:
            statement = statement.where(Study.last_update > low)
        return list(session.execute(statement))

    def _emit(self, session: Session, study_pk: int, study_uid: str, last_update: datetime, now: datetime) -> None:
        dialect = session.get_bind().dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(StudyStability)
        session.execute(insert.values(study_fk=study_pk, last_update=last_update, stable_at=now)
                        .on_conflict_do_update(index_elements=["study_fk"],
                                               set_={"last_update": last_update, "stable_at": now}))
        targets = subscribers(session, "study_stable")
        if targets:
            body = self._study_body(session, study_pk, study_uid, last_update)
            patient = self._patient(session, study_pk) if any(t.include_patient for t in targets) else {}
            deliver_to_each(session, "study_stable",
                            lambda include_patient: {"study": {**body, **(patient if include_patient else {})}},
                            targets)
        rules = active_rules(session, "study_stable")
        if rules:
            subject = study_subject(session, study_pk)
            for rule in rules:
                if matches(rule.conditions, subject):
                    add_forward(session, rule.id, study_uid, None)

    def _study_body(self, session: Session, study_pk: int, study_uid: str, last_update: datetime) -> dict[str, Any]:
        series = session.execute(select(Series.modality, func.count(Instance.pk))
                                 .join(Instance, Instance.series_fk == Series.pk)
                                 .where(Series.study_fk == study_pk).group_by(Series.pk, Series.modality)).all()
        return {"study_instance_uid": study_uid, "study_pk": study_pk, "last_update": iso_utc(last_update),
                "series": len(series), "instances": sum(count for _, count in series),
                "modalities": sorted({modality for modality, _ in series if modality})}

    def _patient(self, session: Session, study_pk: int) -> dict[str, str]:
        from shared.db.models import Patient

        row = session.execute(select(Patient.patient_id, Patient.patient_name)
                              .join(Study, Study.patient_fk == Patient.pk).where(Study.pk == study_pk)).first()
        return {"patient_id": row.patient_id, "patient_name": row.patient_name} if row else {}
