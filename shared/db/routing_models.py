"""Tables of events and routing (issue #8): study stability, webhooks and their deliveries, auto-forward rules and
the forwards they produced. Same Base and naming convention as shared.db.models (migration 0008).

Deliveries and forwards are an outbox: they are written in the transaction that produced the event (indexing an
instance, a study becoming stable), so that nothing is lost or sent twice across restarts, and sent afterwards by
the indexer's event threads (services/indexer/events.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, BigId, JsonDocument, Study, UTCDateTime


class StudyStability(Base):
    """A study that was found stable: the study's last_update when the StudyStable event was emitted.

    The study is stable again (a new event) only once its last_update moved past this value and stayed for
    ``study_stable_seconds``.
    """

    __tablename__ = "study_stability"

    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.pk", ondelete="CASCADE"), primary_key=True)
    last_update: Mapped[datetime] = mapped_column(UTCDateTime)
    stable_at: Mapped[datetime] = mapped_column(UTCDateTime)


Index("ix_studies_last_update", Study.last_update)


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)  # instance_stored, study_stable
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str | None] = mapped_column(String(256), nullable=True)  # HMAC-SHA256 key, never shown
    include_patient: Mapped[bool] = mapped_column(Boolean, default=False)  # opt-in: PatientID/PatientName
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event for one webhook: pending until a 2xx answer, retried with backoff, then failed."""

    __tablename__ = "webhook_deliveries"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


Index("ix_webhook_deliveries_due", WebhookDelivery.state, WebhookDelivery.next_attempt_at)
Index("ix_webhook_deliveries_webhook", WebhookDelivery.webhook_id, WebhookDelivery.pk)


class RoutingRule(Base):
    __tablename__ = "routing_rules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trigger: Mapped[str] = mapped_column(String(16))  # study_stable | instance_stored
    destination: Mapped[str] = mapped_column(String(64))  # a modality name
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON)  # shared.routing.Conditions
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Forward(Base):
    """What a rule decided to send (a study, or the instances of one indexing batch), and its attempts (jobs)."""

    __tablename__ = "forwards"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("routing_rules.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None = the whole study
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


Index("ix_forwards_due", Forward.state, Forward.next_attempt_at)
Index("ix_forwards_rule", Forward.rule_id, Forward.pk)
