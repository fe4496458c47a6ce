"""The modality registry: remote AEs, what each may ask of the node, and where C-MOVE destinations are.

GET /api/modalities, PUT/GET/DELETE /api/modalities/{name}. A change reaches running services within 0.5 s.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.auth import actor_of
from services.api.dependencies import get_session
from services.api.routes.config import client_ip, validation_detail
from shared.db.models import AuditEvent, Modality
from shared.events import iso_utc, utc_now
from shared.node_config import ConfigError, ModalityFields, modality_entry, validate_modality

router = APIRouter(tags=["modalities"])

# The body is validated here (not by FastAPI) so that every 422 has the same shape, naming the key.
BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ModalityFields.model_json_schema(),
    "example": {"ae_title": "CT_ROOM3", "host": "10.1.2.3", "port": 104, "allow": ["echo", "store", "find"],
                "description": "CT in room 3"},
}}}}

ModalityName = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="1 to 64 letters, digits, '_' or '-'")


def _unavailable(exc: SQLAlchemyError) -> HTTPException:
    return HTTPException(503, f"index database unavailable ({exc.__class__.__name__})")


def _as_json(row: Modality) -> dict[str, Any]:
    entry = modality_entry(row).model_dump(mode="json")
    return {"name": entry.pop("name"), **entry, "updated_at": iso_utc(row.updated_at)}


@router.get("/api/modalities", summary="Every registered modality, by name")
def list_modalities(session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    try:
        return [_as_json(row) for row in session.scalars(select(Modality).order_by(Modality.name))]
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc


@router.get("/api/modalities/{name}", summary="One modality (404 if unknown)")
def get_modality(name: str = ModalityName, session: Session = Depends(get_session)) -> dict[str, Any]:
    try:
        row = session.get(Modality, name)
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    if row is None:
        raise HTTPException(404, "no modality with that name")
    return _as_json(row)


@router.put(
    "/api/modalities/{name}",
    summary="Create (201) or replace (200) a modality; takes effect for callers at once (within 0.5 s)",
    description="Body: ae_title, host, port (required); allow (default [\"echo\", \"store\"]), description, "
    "local_ae_title, facility (optional). An invalid body gets 422 naming each bad key; nothing is stored.",
    openapi_extra=BODY_SCHEMA,
)
def put_modality(
    request: Request,
    response: Response,
    fields: dict[str, Any] = Body(..., include_in_schema=False),
    name: str = ModalityName,
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    try:
        entry = validate_modality(name, fields)
    except ConfigError as exc:
        raise HTTPException(422, validation_detail(exc)) from None
    values = entry.model_dump(mode="json")
    try:
        with session.begin():
            row = session.get(Modality, name)
            created = row is None
            previous = None if row is None else modality_entry(row).model_dump(mode="json")
            now = utc_now()
            if row is None:
                row = Modality(name=name)
                session.add(row)
            row.ae_title = entry.ae_title
            row.host = entry.host
            row.port = entry.port
            row.allow = list(entry.allow)
            row.description = entry.description
            row.local_ae_title = entry.local_ae_title
            row.facility = entry.facility
            row.updated_at = now
            session.add(AuditEvent(
                occurred_at=now, action="modality_saved", outcome="success", remote_aet="",
                remote_ip=client_ip(request),
                details={"name": name, "created": created, "old": previous, "new": values,
                         "actor": actor_of(request)},
            ))
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    response.status_code = 201 if created else 200
    return _as_json(row)


@router.delete("/api/modalities/{name}", status_code=204, summary="Remove a modality (404 if unknown)")
def delete_modality(request: Request, name: str = ModalityName, session: Session = Depends(get_session)) -> Response:
    try:
        with session.begin():
            row = session.get(Modality, name)
            if row is None:
                raise HTTPException(404, "no modality with that name")
            previous = modality_entry(row).model_dump(mode="json")
            session.delete(row)
            session.add(AuditEvent(
                occurred_at=utc_now(), action="modality_deleted", outcome="success", remote_aet="",
                remote_ip=client_ip(request), details={"name": name, "old": previous, "actor": actor_of(request)},
            ))
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return Response(status_code=204)
