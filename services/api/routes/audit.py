"""GET /api/audit: the audit trail (associations, DIMSE operations, refusals, REST changes), newest first."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_session
from shared.db.models import AuditEvent
from shared.events import iso_utc

router = APIRouter(tags=["audit"])

MAX_PAGE = 1000


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise HTTPException(422, [{"loc": ["query", name], "key": name, "type": "datetime",
                                   "msg": f"{name}: an ISO 8601 date or time (2026-01-31T12:00:00Z)"}]) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _as_json(row: AuditEvent) -> dict[str, Any]:
    return {"id": row.pk, "occurred_at": iso_utc(row.occurred_at), "action": row.action, "outcome": row.outcome,
            "remote_aet": row.remote_aet, "remote_ip": row.remote_ip, "details": row.details}


@router.get(
    "/api/audit",
    summary="Audit events, newest first, paged and filtered",
    description="Actions. DICOM listeners: association, c_echo, c_store, c_find, c_move, c_get, "
    "association_rejected, request_refused, tls_handshake_failed, storage_full, storage_commitment. Indexer: "
    "duplicate_conflict, patient_conflict, retention_deleted, recycled. REST: config_changed, modality_saved, "
    "modality_deleted, rest_send, stow, token_created, token_revoked, webhook_saved, webhook_deleted, "
    "routing_rule_saved, routing_rule_deleted, study_deleted, series_deleted, instance_deleted, study_protected, "
    "study_unprotected. Several values of a filter: comma-separated.",
)
def list_audit_events(
    action: str | None = Query(None, max_length=500, description="action(s), comma-separated"),
    outcome: str | None = Query(None, max_length=200, description="outcome(s), comma-separated"),
    remote_aet: str | None = Query(None, max_length=16, description="calling AE title (exact)"),
    remote_ip: str | None = Query(None, max_length=64, description="remote address (exact)"),
    since: str | None = Query(None, max_length=40, description="ISO 8601; events at or after it"),
    until: str | None = Query(None, max_length=40, description="ISO 8601; events before it"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=2_147_483_647),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    conditions: list[Any] = []
    if action:
        conditions.append(AuditEvent.action.in_([a.strip() for a in action.split(",") if a.strip()]))
    if outcome:
        conditions.append(AuditEvent.outcome.in_([o.strip() for o in outcome.split(",") if o.strip()]))
    if remote_aet is not None:
        conditions.append(AuditEvent.remote_aet == remote_aet.strip())
    if remote_ip is not None:
        conditions.append(AuditEvent.remote_ip == remote_ip.strip())
    start, end = _moment("since", since), _moment("until", until)
    if start is not None:
        conditions.append(AuditEvent.occurred_at >= start)
    if end is not None:
        conditions.append(AuditEvent.occurred_at < end)
    count = select(func.count()).select_from(AuditEvent).where(*conditions)
    page = (select(AuditEvent).where(*conditions).order_by(AuditEvent.occurred_at.desc(), AuditEvent.pk.desc())
            .limit(limit).offset(offset))
    try:
        total = session.scalar(count) or 0
        events = [_as_json(row) for row in session.scalars(page)]
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    return {"total": total, "limit": limit, "offset": offset, "events": events}
