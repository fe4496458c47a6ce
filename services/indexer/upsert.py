"""Idempotent writes of a batch of index records: get-or-create its patients, studies and series, insert-if-absent
its instances, with a few statements per batch whatever its size (SQLAlchemy Core, statements built once).

Inserts use ON CONFLICT DO NOTHING (PostgreSQL and SQLite alike), so several workers and replayed tasks never
create duplicate rows. The first values of a study or patient are kept (the first instance of the batch that
names it, unless an earlier batch did); conflicts are audited. While a series keeps arriving, one lookup (series
with their study and its patient) finds everything the batch refers to.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Select, Table, Update, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.indexer.extract import IndexRecord
from services.indexer.instance_insert import insert_instances
from shared.db.models import AuditEvent, DeadLetter, Patient, Series, Study
from shared.events import InstanceStored, utc_now

AUDIT_NAMESPACE = uuid.UUID("6f1c1d55-6d0e-4a77-8f7f-0d6f9a3b2c11")
LOOKUP_CHUNK = 500  # keys per IN (...) lookup, well under every database's limit on bound parameters

Indexed = tuple[InstanceStored, IndexRecord]
PATIENTS: Table = Patient.__table__  # type: ignore[assignment]
STUDIES: Table = Study.__table__  # type: ignore[assignment]
SERIES: Table = Series.__table__  # type: ignore[assignment]


def _dialect_insert(dialect: str, table: Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@dataclass(frozen=True)
class _Statements:
    """The batch's statements for one dialect; keys and primary keys go in expanding parameters."""

    known: Select[Any]  # series by UID, with their study and the study's patient
    lookups: dict[str, Select[Any]]  # table name: (key, primary key[, patient_fk]) by key
    inserts: dict[str, Insert]  # table name: insert-if-absent by key
    touch: dict[str, Update]  # table name: last_update of rows by primary key


KEYS = {"patients": "patient_key", "studies": "study_instance_uid", "series": "series_instance_uid"}


@cache
def _statements(dialect: str) -> _Statements:
    keys = bindparam("keys", expanding=True)
    tables = {"patients": PATIENTS, "studies": STUDIES, "series": SERIES}
    lookups = {name: select(table.c[KEYS[name]], table.c.pk, *([table.c.patient_fk] if name == "studies" else []))
               .where(table.c[KEYS[name]].in_(keys)) for name, table in tables.items()}
    known = (select(SERIES.c.series_instance_uid, SERIES.c.pk, STUDIES.c.study_instance_uid, STUDIES.c.pk,
                    STUDIES.c.patient_fk, PATIENTS.c.patient_key)
             .join_from(SERIES, STUDIES, SERIES.c.study_fk == STUDIES.c.pk)
             .join(PATIENTS, STUDIES.c.patient_fk == PATIENTS.c.pk)
             .where(SERIES.c.series_instance_uid.in_(keys)))
    inserts = {name: _dialect_insert(dialect, table).on_conflict_do_nothing(index_elements=[KEYS[name]])
               for name, table in tables.items()}
    touch = {name: table.update().where(table.c.pk.in_(bindparam("pks", expanding=True)))
             .values(last_update=bindparam("now", type_=table.c.last_update.type))
             for name, table in (("studies", STUDIES), ("series", SERIES))}
    return _Statements(known, lookups, inserts, touch)


def insert_ignoring_conflict(session: Session, model: Any, values: dict[str, Any], key: str) -> None:
    dialect = session.get_bind().dialect.name
    session.execute(_dialect_insert(dialect, model.__table__).values(**values)
                    .on_conflict_do_nothing(index_elements=[key]))


def audit(session: Session, event_id: uuid.UUID, action: str, outcome: str, remote_aet: str, remote_ip: str,
          details: dict[str, Any], occurred_at: datetime | None = None) -> None:
    insert_ignoring_conflict(session, AuditEvent, dict(
        occurred_at=occurred_at or utc_now(), event_id=str(event_id), action=action, outcome=outcome,
        remote_aet=remote_aet, remote_ip=remote_ip, details=details,
    ), "event_id")


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), LOOKUP_CHUNK):
        yield keys[start:start + LOOKUP_CHUNK]


class _Writer:
    """One batch's writes on the session's connection."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.connection: Connection = session.connection()
        self.statements = _statements(self.connection.dialect.name)
        self.now = now
        self.patients: dict[str, int] = {}
        self.studies: dict[str, tuple[int, int]] = {}  # Study Instance UID: (pk, pk of the study's patient)
        self.series: dict[str, int] = {}

    def find_known(self, series_uids: list[str]) -> None:
        """The series already indexed, with their study and its patient (all a continuing series needs)."""
        for chunk in _chunks(series_uids):
            for series_uid, series_pk, study_uid, study_pk, patient_pk, patient_key in self.connection.execute(
                    self.statements.known, {"keys": chunk}):
                self.series[series_uid] = series_pk
                self.studies[study_uid] = (study_pk, patient_pk)
                self.patients[patient_key] = patient_pk

    def get_or_create(self, name: str, rows: dict[str, dict[str, Any]]) -> None:
        """Rows (by key) not known yet: looked up, the missing inserted (if absent) and looked up again."""
        known = getattr(self, name)
        missing = [key for key in rows if key not in known]
        if missing:
            self._look_up(name, missing)
            absent = [key for key in missing if key not in known]
            if absent:
                self.connection.execute(self.statements.inserts[name], [rows[key] for key in absent])
                self._look_up(name, absent)  # with those another worker inserted meanwhile

    def _look_up(self, name: str, keys: list[str]) -> None:
        known = getattr(self, name)
        for chunk in _chunks(keys):
            for row in self.connection.execute(self.statements.lookups[name], {"keys": chunk}):
                known[row[0]] = tuple(row[1:]) if name == "studies" else row[1]

    def insert_instances(self, batch: list[Indexed]) -> set[str]:
        """Insert the instances not indexed yet; return the SOP Instance UIDs of those inserted."""
        now = self.now
        rows = [dict(
            sop_instance_uid=record.sop_instance_uid, sop_class_uid=record.sop_class_uid,
            series_fk=self.series[record.series_instance_uid], patient_fk=self.patients[record.patient_key],
            instance_number=record.instance_number, transfer_syntax=record.transfer_syntax,
            object_key=event.object_key, size=record.size, sha256=record.sha256,
            remote_aet=event.reception.remote_aet, called_aet=event.reception.called_aet,
            remote_ip=event.reception.remote_ip, received_at=event.reception.received_at, indexed_at=now,
            specific_character_set=record.specific_character_set,
        ) for event, record in batch]
        return insert_instances(self.connection, rows, [record.attributes_json for _, record in batch])

    def touch(self, name: str, pks: set[int]) -> None:
        """Set last_update of the studies or series that received an instance."""
        if pks:
            self.connection.execute(self.statements.touch[name], {"pks": sorted(pks), "now": self.now})


def _first_of_each(records: Iterable[IndexRecord], key: str) -> dict[str, IndexRecord]:
    firsts: dict[str, IndexRecord] = {}
    for record in records:
        firsts.setdefault(getattr(record, key), record)
    return firsts


def _create_what_is_missing(writer: _Writer, records: list[IndexRecord]) -> None:
    now = writer.now
    writer.find_known(list(_first_of_each(records, "series_instance_uid")))
    writer.get_or_create("patients", {key: dict(
        patient_key=key, patient_id=record.patient_id, patient_name=record.patient_name,
        patient_name_folded=record.patient_name_folded, patient_name_search=record.patient_name_search,
        patient_birth_date=record.patient_birth_date, patient_sex=record.patient_sex, created_at=now,
    ) for key, record in _first_of_each(records, "patient_key").items()})
    writer.get_or_create("studies", {uid: dict(
        study_instance_uid=uid, patient_fk=writer.patients[record.patient_key], study_date=record.study_date,
        study_time=record.study_time, accession_number=record.accession_number, study_id=record.study_id,
        study_description=record.study_description, referring_physician_name=record.referring_physician_name,
        created_at=now, last_update=now,
    ) for uid, record in _first_of_each(records, "study_instance_uid").items()})
    writer.get_or_create("series", {uid: dict(
        series_instance_uid=uid, study_fk=writer.studies[record.study_instance_uid][0], modality=record.modality,
        series_number=record.series_number, series_description=record.series_description,
        body_part_examined=record.body_part_examined, created_at=now, last_update=now,
    ) for uid, record in _first_of_each(records, "series_instance_uid").items()})


def _audit_patient_conflicts(session: Session, writer: _Writer, indexed: list[Indexed]) -> None:
    """Policy: an instance whose study is held under another patient keeps its own patient; the conflict is audited."""
    for event, record in indexed:
        patient_pk = writer.patients[record.patient_key]
        study_patient_pk = writer.studies[record.study_instance_uid][1]
        if study_patient_pk != patient_pk:
            audit(session, uuid.uuid5(AUDIT_NAMESPACE, f"patient-conflict:{record.sop_instance_uid}"),
                  "patient_conflict", "recorded", event.reception.remote_aet, event.reception.remote_ip,
                  {"sop_instance_uid": record.sop_instance_uid, "study_instance_uid": record.study_instance_uid,
                   "study_patient_pk": study_patient_pk, "instance_patient_pk": patient_pk})


def upsert_instances(session: Session, batch: list[Indexed], now: datetime) -> list[Indexed]:
    """Index a batch; return the instances newly indexed (a SOP Instance UID already in the index, or earlier in
    the batch, adds nothing)."""
    by_uid: dict[str, Indexed] = {}
    for event, record in batch:
        by_uid.setdefault(record.sop_instance_uid, (event, record))
    if not by_uid:
        return []
    firsts = list(by_uid.values())
    writer = _Writer(session, now)
    _create_what_is_missing(writer, [record for _, record in firsts])
    inserted = writer.insert_instances(firsts)
    indexed = [(event, record) for event, record in firsts if record.sop_instance_uid in inserted]
    _audit_patient_conflicts(session, writer, indexed)
    writer.touch("series", {writer.series[record.series_instance_uid] for _, record in indexed})
    writer.touch("studies", {writer.studies[record.study_instance_uid][0] for _, record in indexed})
    return indexed


def record_dead_letter(session: Session, event: InstanceStored, reason: str) -> None:
    insert_ignoring_conflict(session, DeadLetter, dict(
        sop_instance_uid=event.sop_instance_uid, object_key=event.object_key, reason=reason,
        event=event.model_dump(mode="json"), created_at=utc_now(),
    ), "sop_instance_uid")
