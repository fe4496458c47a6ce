"""Webhooks: JSON events POSTed to configured URLs (REST: /api/webhooks), with retries and a delivery log.

Events (``event`` in the body, also the ``X-Pacs-Event`` header):
- ``instance_stored``: one POST per indexing batch (at most ``indexer_batch_size`` instances, often one), listing
  the instances newly indexed: SOP Class/Instance, Study and Series UIDs, transfer syntax, modality, calling AE
  title, reception time and size;
- ``study_stable``: one POST per study that became stable (``study_stable_seconds`` without a new instance): its
  UID, the index's study id (``study_pk``), its series and instance counts and modalities.

Bodies carry UIDs and ids only. PatientID and PatientName are added (``patient_id``, ``patient_name``) only for a
webhook whose ``include_patient`` is true (the admin's opt-in). Deliveries are rows of ``webhook_deliveries``,
written in the transaction that produced the event (so they survive restarts and are never sent for an event that
was rolled back) and sent by the indexer's event thread: success is any 2xx answer within 10 s; otherwise the
delivery is retried after ``webhook_retry_seconds``, doubling each time (at most one hour), until
``webhook_max_attempts``, then marked ``failed``. A delivery may arrive more than once (a crash between the POST
and the record of its answer): receivers deduplicate on ``event_id``.

With a ``secret``, each POST carries ``X-Pacs-Signature: sha256=<hex HMAC-SHA256 of the raw body with the
secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.routing_models import Webhook, WebhookDelivery
from shared.events import iso_utc, utc_now

EventName = Literal["instance_stored", "study_stable"]
EVENTS: tuple[str, ...] = ("instance_stored", "study_stable")
SIGNATURE_HEADER = "X-Pacs-Signature"
MAX_URL_LENGTH = 2048


class WebhookFields(BaseModel):
    """The body of PUT /api/webhooks/{name}."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(description="http:// or https:// URL that receives the POSTs.")
    events: list[EventName] = Field(default_factory=lambda: list(EVENTS), min_length=1,
                                    description="instance_stored and/or study_stable.")
    enabled: bool = True
    secret: str | None = Field(None, min_length=16, max_length=256,
                               description="Key of the X-Pacs-Signature HMAC-SHA256 (write-only; null = unsigned).")
    include_patient: bool = Field(False, description="Add PatientID and PatientName to the events (opt-in).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if len(value) > MAX_URL_LENGTH or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL with a host, at most 2048 characters")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return [event for event in EVENTS if event in set(value)]


@dataclass(frozen=True)
class Subscriber:
    id: str
    include_patient: bool


def subscribers(session: Session, event: str) -> list[Subscriber]:
    rows = session.scalars(select(Webhook).where(Webhook.enabled.is_(True)))
    return [Subscriber(row.id, row.include_patient) for row in rows if event in (row.events or [])]


def envelope(event: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "event": event, "event_id": str(uuid.uuid4()), "occurred_at": iso_utc(utc_now()),
            **body}


def add_delivery(session: Session, webhook_id: str, payload: dict[str, Any]) -> None:
    now = utc_now()
    session.add(WebhookDelivery(webhook_id=webhook_id, event_id=payload["event_id"], event=payload["event"],
                                payload=payload, state="pending", attempts=0, next_attempt_at=now,
                                claimed_until=None, last_status=None, last_error="", created_at=now,
                                delivered_at=None))


def deliver_to_each(session: Session, event: str, body_for: Any, targets: Iterable[Subscriber]) -> None:
    """One delivery per subscriber; ``body_for(include_patient)`` builds the event's body."""
    for target in targets:
        add_delivery(session, target.id, envelope(event, body_for(target.include_patient)))


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return iso_utc(value) if value else None

    return {"id": row.pk, "event": row.event, "event_id": row.event_id, "state": row.state,
            "attempts": row.attempts, "last_status": row.last_status, "last_error": row.last_error,
            "created_at": moment(row.created_at), "next_attempt_at": moment(row.next_attempt_at) if
            row.state == "pending" else None, "delivered_at": moment(row.delivered_at)}
