"""Webhooks (admin): GET /api/webhooks, PUT/GET/DELETE /api/webhooks/{name}, GET /api/webhooks/{name}/deliveries.

What is sent, when and how it is retried and signed: shared/webhooks.py. The secret is write-only: answers say
``secret_set`` and never show it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_session
from services.api.routes.named_resources import all_by_name, audit_change, by_name, row_to_save
from shared.db.routing_models import Webhook, WebhookDelivery
from shared.events import iso_utc, utc_now
from shared.webhooks import WebhookFields, delivery_json

router = APIRouter(tags=["webhooks"])

ResourceName = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="1 to 64 letters, digits, '_' or '-'")
DELIVERY_STATES = ("pending", "delivered", "failed")
MAX_PAGE = 500
BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": WebhookFields.model_json_schema(),
    "example": {"url": "https://hooks.example.org/pacs", "events": ["study_stable"],
                "secret": "a-long-random-shared-secret"},
}}}}


def unavailable(exc: SQLAlchemyError) -> HTTPException:
    return HTTPException(503, f"index database unavailable ({exc.__class__.__name__})")


def validated(model: type[BaseModel], body: Any) -> Any:
    """The body as ``model``, or 422 in the shape of /api/config (loc, key, msg, type), nothing stored."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "body"
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append({"loc": ["body", *error["loc"]], "key": key, "msg": f"{key}: {message}",
                             "type": error["type"]})
        raise HTTPException(422, problems) from None


def _as_json(row: Webhook) -> dict[str, Any]:
    return {"name": row.name, "id": row.id, "url": row.url, "events": list(row.events), "enabled": row.enabled,
            "secret_set": bool(row.secret), "include_patient": row.include_patient,
            "created_at": iso_utc(row.created_at), "updated_at": iso_utc(row.updated_at)}


def _by_name(session: Session, name: str) -> Webhook:
    return by_name(session, Webhook, name, "no webhook with that name")


@router.get("/api/webhooks", summary="Every webhook, by name (secrets are never shown)")
def list_webhooks(session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    try:
        return [_as_json(row) for row in all_by_name(session, Webhook)]
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


@router.get("/api/webhooks/{name}", summary="One webhook (404 if unknown)")
def get_webhook(name: str = ResourceName, session: Session = Depends(get_session)) -> dict[str, Any]:
    try:
        return _as_json(_by_name(session, name))
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


@router.put("/api/webhooks/{name}", summary="Create (201) or replace (200) a webhook",
            description="Body: url (required), events (instance_stored, study_stable; default both), enabled, "
            "secret (HMAC key, at least 16 characters; omitted or null = unsigned), include_patient (default "
            "false). 422 naming each bad key.", openapi_extra=BODY_SCHEMA)
def put_webhook(request: Request, response: Response, body: Any = Body(..., include_in_schema=False),
                name: str = ResourceName, session: Session = Depends(get_session)) -> dict[str, Any]:
    fields: WebhookFields = validated(WebhookFields, body)
    try:
        with session.begin():
            now = utc_now()
            row, created = row_to_save(session, Webhook, name, now)
            row.url, row.events, row.enabled = fields.url, list(fields.events), fields.enabled
            row.secret, row.include_patient, row.updated_at = fields.secret, fields.include_patient, now
            audit_change(session, request, "webhook_saved", {
                "name": name, "created": created, "events": list(fields.events), "enabled": fields.enabled,
                "include_patient": fields.include_patient, "signed": bool(fields.secret)}, now)
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    response.status_code = 201 if created else 200
    return _as_json(row)


@router.delete("/api/webhooks/{name}", status_code=204, summary="Remove a webhook and its delivery log")
def delete_webhook(request: Request, name: str = ResourceName, session: Session = Depends(get_session)) -> Response:
    try:
        with session.begin():
            row = _by_name(session, name)
            session.query(WebhookDelivery).filter(WebhookDelivery.webhook_id == row.id).delete()
            session.delete(row)
            audit_change(session, request, "webhook_deleted", {"name": name})
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    return Response(status_code=204)


@router.get("/api/webhooks/{name}/deliveries", summary="The delivery log of a webhook, newest first, paged")
def list_deliveries(
    name: str = ResourceName,
    state: str | None = Query(None, description="only deliveries in this state: pending, delivered, failed"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=2_147_483_647),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    if state is not None and state not in DELIVERY_STATES:
        raise HTTPException(422, [{"loc": ["query", "state"], "key": "state",
                                   "msg": "state: one of pending, delivered, failed", "type": "enum"}])
    try:
        webhook = _by_name(session, name)
        where = [WebhookDelivery.webhook_id == webhook.id]
        if state is not None:
            where.append(WebhookDelivery.state == state)
        total = session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where)) or 0
        rows = session.scalars(select(WebhookDelivery).where(*where).order_by(WebhookDelivery.pk.desc())
                               .limit(limit).offset(offset))
        deliveries = [delivery_json(row) for row in rows]
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
    return {"total": total, "limit": limit, "offset": offset, "deliveries": deliveries}
