"""Idempotent writes of index records: get-or-create patient, study and series; insert-if-absent instance.

Inserts use ON CONFLICT DO NOTHING (PostgreSQL and SQLite alike), so several workers and replayed tasks
never create duplicate rows. The first values of a study or patient are kept; conflicts are audited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.indexer.extract import IndexRecord
from shared.db.models import AuditEvent, DeadLetter, Instance, Patient, Series, Study
from shared.events import InstanceStored, utc_now

AUDIT_NAMESPACE = uuid.UUID("6f1c1d55-6d0e-4a77-8f7f-0d6f9a3b2c11")


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def insert_ignoring_conflict(session: Session, model: Any, values: dict[str, Any], key: str) -> None:
    session.execute(_insert(session, model).values(**values).on_conflict_do_nothing(index_elements=[key]))


def audit(session: Session, event_id: uuid.UUID, action: str, outcome: str, remote_aet: str, remote_ip: str,
          details: dict[str, Any], occurred_at: datetime | None = None) -> None:
    insert_ignoring_conflict(session, AuditEvent, dict(
        occurred_at=occurred_at or utc_now(), event_id=str(event_id), action=action, outcome=outcome,
        remote_aet=remote_aet, remote_ip=remote_ip, details=details,
    ), "event_id")


@dataclass
class BatchCache:
    """Primary keys looked up within one batch (a study's instances usually come together)."""

    patients: dict[str, int] = field(default_factory=dict)
    studies: dict[str, tuple[int, int]] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    touched_studies: set[int] = field(default_factory=set)
    touched_series: set[int] = field(default_factory=set)

    def mark_updated(self, session: Session, now: datetime) -> None:
        """Set last_update of every study and series that received an instance in this batch."""
        if self.touched_series:
            session.execute(update(Series).where(Series.pk.in_(self.touched_series)).values(last_update=now))
        if self.touched_studies:
            session.execute(update(Study).where(Study.pk.in_(self.touched_studies)).values(last_update=now))


def _patient_pk(session: Session, record: IndexRecord, now: datetime, cache: BatchCache) -> int:
    if record.patient_key not in cache.patients:
        insert_ignoring_conflict(session, Patient, dict(
            patient_key=record.patient_key, patient_id=record.patient_id, patient_name=record.patient_name,
            patient_name_folded=record.patient_name_folded, patient_name_search=record.patient_name_search, patient_birth_date=record.patient_birth_date,
            patient_sex=record.patient_sex, created_at=now,
        ), "patient_key")
        cache.patients[record.patient_key] = session.scalars(
            select(Patient.pk).where(Patient.patient_key == record.patient_key)).one()
    return cache.patients[record.patient_key]


def _study_pks(session: Session, record: IndexRecord, patient_pk: int, now: datetime,
               cache: BatchCache) -> tuple[int, int]:
    """(study pk, pk of the patient the study is held under)."""
    if record.study_instance_uid not in cache.studies:
        insert_ignoring_conflict(session, Study, dict(
            study_instance_uid=record.study_instance_uid, patient_fk=patient_pk, study_date=record.study_date,
            study_time=record.study_time, accession_number=record.accession_number, study_id=record.study_id,
            study_description=record.study_description, referring_physician_name=record.referring_physician_name,
            created_at=now, last_update=now,
        ), "study_instance_uid")
        row = session.execute(select(Study.pk, Study.patient_fk).where(
            Study.study_instance_uid == record.study_instance_uid)).one()
        cache.studies[record.study_instance_uid] = (row.pk, row.patient_fk)
    return cache.studies[record.study_instance_uid]


def _series_pk(session: Session, record: IndexRecord, study_pk: int, now: datetime, cache: BatchCache) -> int:
    if record.series_instance_uid not in cache.series:
        insert_ignoring_conflict(session, Series, dict(
            series_instance_uid=record.series_instance_uid, study_fk=study_pk, modality=record.modality,
            series_number=record.series_number, series_description=record.series_description,
            body_part_examined=record.body_part_examined, created_at=now, last_update=now,
        ), "series_instance_uid")
        cache.series[record.series_instance_uid] = session.scalars(
            select(Series.pk).where(Series.series_instance_uid == record.series_instance_uid)).one()
    return cache.series[record.series_instance_uid]


def upsert_instance(session: Session, event: InstanceStored, record: IndexRecord, cache: BatchCache) -> bool:
    """Index one instance; True when a new row was written, False when it was already there."""
    now = utc_now()
    reception = event.reception
    patient_pk = _patient_pk(session, record, now, cache)
    study_pk, study_patient_pk = _study_pks(session, record, patient_pk, now, cache)
    series_pk = _series_pk(session, record, study_pk, now, cache)
    inserted = session.execute(_insert(session, Instance).values(
        sop_instance_uid=record.sop_instance_uid, sop_class_uid=record.sop_class_uid, series_fk=series_pk,
        patient_fk=patient_pk, instance_number=record.instance_number, transfer_syntax=record.transfer_syntax,
        object_key=event.object_key, size=record.size, sha256=record.sha256, remote_aet=reception.remote_aet,
        called_aet=reception.called_aet, remote_ip=reception.remote_ip, received_at=reception.received_at,
        indexed_at=now, specific_character_set=record.specific_character_set, attributes=record.attributes,
    ).on_conflict_do_nothing(index_elements=["sop_instance_uid"]).returning(Instance.pk)).first()
    if inserted is None:
        return False
    cache.touched_series.add(series_pk)
    cache.touched_studies.add(study_pk)
    if study_patient_pk != patient_pk:
        # Policy: keep the instance with its own patient attributes, never re-parent, audit the conflict.
        audit(session, uuid.uuid5(AUDIT_NAMESPACE, f"patient-conflict:{record.sop_instance_uid}"),
              "patient_conflict", "recorded", reception.remote_aet, reception.remote_ip,
              {"sop_instance_uid": record.sop_instance_uid, "study_instance_uid": record.study_instance_uid,
               "study_patient_pk": study_patient_pk, "instance_patient_pk": patient_pk})
    return True


def record_dead_letter(session: Session, event: InstanceStored, reason: str) -> None:
    insert_ignoring_conflict(session, DeadLetter, dict(
        sop_instance_uid=event.sop_instance_uid, object_key=event.object_key, reason=reason,
        event=event.model_dump(mode="json"), created_at=utc_now(),
    ), "sop_instance_uid")
