"""Auto-forward rules (admin): GET /api/routing/rules, PUT/GET/DELETE /api/routing/rules/{name}, and
GET /api/routing/forwards (what the rules decided to send, their attempts and jobs).

What a rule matches: shared/routing.py; how forwards become jobs and are retried: services/indexer/forwarder.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_session
from services.api.routes.named_resources import all_by_name, audit_change, by_name, row_to_save
from services.api.routes.webhooks import MAX_PAGE, ResourceName, unavailable, validated
from shared.db.models import Modality
from shared.db.routing_models import Forward, RoutingRule
from shared.events import iso_utc, utc_now
from shared.routing import RuleFields

router = APIRouter(tags=["routing"])

FORWARD_STATES = ("pending", "running", "done", "failed")
BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": RuleFields.model_json_schema(),
    "example": {"destination": "archive2", "trigger": "study_stable",
                "conditions": {"calling_aet": ["CT_ROOM3"], "modality": ["CT"],
                               "tags": {"StudyDescription": "*HEAD*"}}},
}}}}


def _as_json(row: RoutingRule) -> dict[str, Any]:
    return {"name": row.name, "id": row.id, "enabled": row.enabled, "trigger": row.trigger,
            "destination": row.destination, "conditions": row.conditions, "created_at": iso_utc(row.created_at),
            "updated_at": iso_utc(row.updated_at)}


def _by_name(session: Session, name: str) -> RoutingRule:
    return by_name(session, RoutingRule, name, "no routing rule with that name")


@router.get("/api/routing/rules", summary="Every auto-forward rule, by name")
def list_rules(session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    try:
        return [_as_json(row) for row in all_by_name(session, RoutingRule)]
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


@router.get("/api/routing/rules/{name}", summary="One auto-forward rule (404 if unknown)")
def get_rule(name: str = ResourceName, session: Session = Depends(get_session)) -> dict[str, Any]:
    try:
        return _as_json(_by_name(session, name))
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


@router.put("/api/routing/rules/{name}", summary="Create (201) or replace (200) an auto-forward rule",
            description="Body: destination (a registered modality's name), trigger (study_stable or "
            "instance_stored), conditions {calling_aet: [...], modality: [...], tags: {keyword: pattern}}, "
            "enabled. 422 naming each bad key (also for a destination that is not registered).",
            openapi_extra=BODY_SCHEMA)
def put_rule(request: Request, response: Response, body: Any = Body(..., include_in_schema=False),
             name: str = ResourceName, session: Session = Depends(get_session)) -> dict[str, Any]:
    fields: RuleFields = validated(RuleFields, body)
    conditions = fields.conditions.model_dump(mode="json")
    try:
        with session.begin():
            if session.get(Modality, fields.destination) is None:
                raise HTTPException(422, [{"loc": ["body", "destination"], "key": "destination",
                                           "msg": "destination: no registered modality with that name",
                                           "type": "unknown_modality"}])
            now = utc_now()
            row, created = row_to_save(session, RoutingRule, name, now)
            row.enabled, row.trigger, row.destination = fields.enabled, fields.trigger, fields.destination
            row.conditions, row.updated_at = conditions, now
            audit_change(session, request, "routing_rule_saved", {
                "name": name, "created": created, "trigger": fields.trigger, "destination": fields.destination,
                "enabled": fields.enabled}, now)
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    response.status_code = 201 if created else 200
    return _as_json(row)


@router.delete("/api/routing/rules/{name}", status_code=204,
               summary="Remove a rule; its forwards not yet sent are dropped (jobs already made keep running)")
def delete_rule(request: Request, name: str = ResourceName, session: Session = Depends(get_session)) -> Response:
    try:
        with session.begin():
            row = _by_name(session, name)
            session.query(Forward).filter(Forward.rule_id == row.id).delete()
            session.delete(row)
            audit_change(session, request, "routing_rule_deleted", {"name": name})
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    return Response(status_code=204)


@router.get("/api/routing/forwards", summary="Auto-forwards, newest first, paged: rule, study, state, attempts, job")
def list_forwards(
    rule: str | None = Query(None, max_length=64, description="only this rule's forwards (its name)"),
    state: str | None = Query(None, description="only forwards in this state: " + ", ".join(FORWARD_STATES)),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=2_147_483_647),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    if state is not None and state not in FORWARD_STATES:
        raise HTTPException(422, [{"loc": ["query", "state"], "key": "state",
                                   "msg": "state: one of " + ", ".join(FORWARD_STATES), "type": "enum"}])
    where: list[Any] = []
    if state is not None:
        where.append(Forward.state == state)
    if rule is not None:
        where.append(RoutingRule.name == rule)
    try:
        total = session.scalar(select(func.count()).select_from(Forward)
                               .join(RoutingRule, RoutingRule.id == Forward.rule_id).where(*where)) or 0
        rows = session.execute(select(Forward, RoutingRule.name).join(RoutingRule, RoutingRule.id == Forward.rule_id)
                               .where(*where).order_by(Forward.pk.desc()).limit(limit).offset(offset)).all()
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    forwards = [{"id": forward.pk, "rule": rule_name, "study_instance_uid": forward.study_instance_uid,
                 "instances": None if forward.sop_instance_uids is None else len(forward.sop_instance_uids),
                 "state": forward.state, "attempts": forward.attempts, "job_id": forward.job_id,
                 "last_error": forward.last_error, "created_at": iso_utc(forward.created_at),
                 "updated_at": iso_utc(forward.updated_at),
                 "next_attempt_at": iso_utc(forward.next_attempt_at) if forward.state == "pending" else None}
                for forward, rule_name in rows]
    return {"total": total, "limit": limit, "offset": offset, "forwards": forwards}
