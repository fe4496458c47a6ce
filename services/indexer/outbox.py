"""Events of newly indexed instances, written in the indexing transaction (an outbox): instance_stored webhook
deliveries (one per webhook per batch) and forwards of the auto-forward rules triggered by instance_stored.

A replayed batch indexes nothing new, so it emits nothing: each instance is announced once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from services.indexer.extract import IndexRecord
from shared.db.routing_models import RoutingRule, Webhook
from shared.events import InstanceStored, iso_utc
from shared.routing import Subject, active_rules, add_forward, matches
from shared.webhooks import deliver_to_each, subscribers

Indexed = tuple[InstanceStored, IndexRecord]
# Whether any webhook is enabled, whether any instance_stored rule is: one cheap query per batch, and the full
# lookups only when there is something to look up (most nodes have neither).
WHAT_TO_LOOK_UP = select(exists().where(Webhook.enabled.is_(True)),
                         exists().where(RoutingRule.enabled.is_(True), RoutingRule.trigger == "instance_stored"))


def _instance(event: InstanceStored, record: IndexRecord, include_patient: bool) -> dict[str, Any]:
    body = {"sop_instance_uid": record.sop_instance_uid, "sop_class_uid": record.sop_class_uid,
            "study_instance_uid": record.study_instance_uid, "series_instance_uid": record.series_instance_uid,
            "transfer_syntax": record.transfer_syntax, "modality": record.modality,
            "remote_aet": event.reception.remote_aet, "received_at": iso_utc(event.reception.received_at),
            "size": record.size}
    if include_patient:
        body.update(patient_id=record.patient_id, patient_name=record.patient_name)
    return body


def record_instance_events(session: Session, indexed: list[Indexed]) -> None:
    if not indexed:
        return
    any_webhook, any_rule = session.connection().execute(WHAT_TO_LOOK_UP).one()
    targets = subscribers(session, "instance_stored") if any_webhook else []
    if targets:
        deliver_to_each(session, "instance_stored", lambda include_patient: {
            "instances": [_instance(event, record, include_patient) for event, record in indexed]}, targets)
    for rule in active_rules(session, "instance_stored") if any_rule else []:
        by_study: dict[str, list[str]] = {}
        for event, record in indexed:
            subject = Subject(frozenset({event.reception.remote_aet}), frozenset({record.modality}),
                              record.attributes)
            if matches(rule.conditions, subject):
                by_study.setdefault(record.study_instance_uid, []).append(record.sop_instance_uid)
        for study_uid, uids in by_study.items():
            add_forward(session, rule.id, study_uid, uids)
