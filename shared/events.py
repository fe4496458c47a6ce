"""Versioned events that travel on the queue. They carry ids and keys, never datasets or patient data."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.uids import require_uid


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utc_now)


class Reception(BaseModel):
    """Who sent an instance, to whom, from where, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    remote_aet: str
    called_aet: str
    remote_ip: str
    received_at: datetime


class InstanceStored(Event):
    """An instance is durable in the object store under ``object_key`` and waits to be indexed."""

    kind: Literal["instance_stored"] = "instance_stored"
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str
    object_key: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reception: Reception
    # The stamp of the object its put_new created (shared.storage.base.ObjectStore.stamp): while the object under
    # object_key still has it, size and sha256 are those of its bytes and the indexer does not hash them again.
    # None (a replayed pending marker, an S3 store, a re-send): the indexer hashes what it reads.
    object_stamp: str | None = Field(default=None, max_length=200, pattern=r"^[0-9a-f.]+$")

    @field_validator("sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid",
                     "transfer_syntax")
    @classmethod
    def _uid(cls, value: str) -> str:
        return require_uid(value, "UID")


class DuplicateReceived(Event):
    """An instance arrived whose SOP Instance UID is already stored with other content; the first was kept."""

    kind: Literal["duplicate_received"] = "duplicate_received"
    sop_instance_uid: str
    object_key: str
    stored_sha256: str
    received_sha256: str
    reception: Reception

    @field_validator("sop_instance_uid")
    @classmethod
    def _uid(cls, value: str) -> str:
        return require_uid(value, "SOP Instance UID")


def iso_utc(moment: datetime) -> str:
    """The node's one time format: ISO 8601, UTC, microseconds, 'Z' suffix."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
