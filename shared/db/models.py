"""The index: patients, studies, series, instances, plus the audit log, dead letters and service heartbeats.

Every table keeps the attributes queries use most as columns, and the instance keeps all its non-bulk
attributes as DICOM JSON, so that any tag can be matched and returned later.
Constraint names follow one convention so that Alembic batch migrations work on SQLite too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDocument = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as UTC; always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    __tablename__ = "patients"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # PatientID, or for an instance without one a per-study key, so that ID-less studies never merge.
    patient_key: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    patient_name: Mapped[str] = mapped_column(Text, default="")
    patient_name_folded: Mapped[str] = mapped_column(Text, default="", index=True)  # case-folded
    patient_name_search: Mapped[str] = mapped_column(Text, default="", index=True)  # case-folded, no accents
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Study(Base):
    __tablename__ = "studies"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(Text, default="")
    referring_physician_name: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_update: Mapped[datetime] = mapped_column(UTCDateTime)


class Series(Base):
    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.pk"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(Text, default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_update: Mapped[datetime] = mapped_column(UTCDateTime)


class Instance(Base):
    __tablename__ = "instances"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.pk"))  # indexed with pk: ix_instances_series_fk_pk
    # The instance's own patient; differs from its study's patient only after a recorded conflict.
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    remote_aet: Mapped[str] = mapped_column(String(16), default="", index=True)
    called_aet: Mapped[str] = mapped_column(String(16), default="")
    remote_ip: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    specific_character_set: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonDocument)  # DICOM JSON, bulk data left out


class AuditEvent(Base):
    __tablename__ = "audit_events"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    event_id: Mapped[str | None] = mapped_column(String(36), unique=True, nullable=True)  # idempotent replays
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    remote_aet: Mapped[str] = mapped_column(String(16), default="")
    remote_ip: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    object_key: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(Text)
    event: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceHeartbeat(Base):
    __tablename__ = "service_heartbeats"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance_name: Mapped[str] = mapped_column(String(200), unique=True)  # service@host:pid
    service: Mapped[str] = mapped_column(String(32), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


Index("ix_instances_series_number", Instance.series_fk, Instance.instance_number)
# (series_fk, pk): per-series counts and first instances as index-only scans (migration 0006)
Index("ix_instances_series_fk_pk", Instance.series_fk, Instance.pk)


class NodeSetting(Base):
    """One key of the live node configuration (shared.node_config.NodeConfig) that was set over REST.

    Keys never set follow their defaults; the value is the key's JSON value as validated by NodeConfig.
    """

    __tablename__ = "node_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Modality(Base):
    """A registered remote AE: who may call us for what, and where C-MOVE destinations are."""

    __tablename__ = "modalities"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # [A-Za-z0-9_-]{1,64}
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    allow: Mapped[list[str]] = mapped_column(JSON)  # subset of echo, store, find, move, get
    description: Mapped[str] = mapped_column(Text, default="")
    local_ae_title: Mapped[str | None] = mapped_column(String(16), nullable=True)
    facility: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConfigGeneration(Base):
    """One row: a counter that every change of ``node_settings`` or ``modalities`` raises in its own transaction.

    Database triggers raise it (migration 0011), so a change made by any writer counts: the API, a script, an
    admin's SQL. A service compares it with the value its configuration was read at and reads the configuration
    again only when it moved (shared.live_config). On SQLite, a batch migration that recreates either table drops its
    triggers: such a migration must create them again (tests/shared/test_live_config.py fails without them).
    """

    __tablename__ = "config_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class Job(Base):
    """A set of C-STORE sub-operations to one destination: a C-MOVE, or a send asked over REST."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    kind: Mapped[str] = mapped_column(String(16))  # c-move | rest-store
    destination_ae_title: Mapped[str] = mapped_column(String(16))
    destination_host: Mapped[str] = mapped_column(String(255))
    destination_port: Mapped[int] = mapped_column(Integer)
    calling_ae_title: Mapped[str] = mapped_column(String(16))  # the AE title the sub-operations use
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | done | failed | cancelled
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    warning: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    runner: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the mover run holding the job
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # renewed while it runs


class JobItem(Base):
    """One instance of a job, in sending order, with what became of it."""

    __tablename__ = "job_items"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | completed | warning | failed
    detail: Mapped[str] = mapped_column(Text, default="")


Index("ix_job_items_job_position", JobItem.job_id, JobItem.position)


class ApiToken(Base):
    """A bearer token of the HTTP API. Only the SHA-256 of the secret is kept; the secret is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    name: Mapped[str] = mapped_column(String(64), index=True)  # [A-Za-z0-9_.-]{1,64}; unique among live tokens
    role: Mapped[str] = mapped_column(String(16))  # admin | operator | viewer
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # hex digest of the whole token
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to recognise it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


Index(
    "uq_api_tokens_live_name",
    ApiToken.name,
    unique=True,
    sqlite_where=ApiToken.revoked_at.is_(None),
    postgresql_where=ApiToken.revoked_at.is_(None),
)
