"""Deleting studies, series and instances (admin), study protection (admin), and the retention dry run (viewer).

DELETE /api/studies/{uid}, /api/series/{uid}, /api/instances/{uid}: the index rows, the objects and their claims,
one audit record (shared.deletion: index rows first, objects after, the rest finished by the indexer's lifecycle
loop after a crash). PUT/DELETE /api/studies/{uid}/protection: retention skips protected studies and deletion
refuses them (409). GET /api/retention/preview: what retention would delete now. The roles come from the method
(services.api.auth: DELETE and PUT need admin, GET viewer).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from services.api.auth import actor_of
from services.api.dependencies import get_runtime
from shared.db.models import AuditEvent, Study
from shared.db.storage_models import ProtectedStudy
from shared.deletion import Level, NotFound, StudyProtected, delete_entity
from shared.events import iso_utc, utc_now
from shared.node_config import default_config_for, load_config
from shared.retention import preview
from shared.runtime import Runtime
from shared.storage import StorageError
from shared.uids import is_valid_uid

router = APIRouter(tags=["storage"])


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _require_uid(uid: str) -> str:
    if not is_valid_uid(uid):
        raise HTTPException(422, "not a valid UID (digits and dots, at most 64 characters)")
    return uid


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"index database unavailable ({exc.__class__.__name__})")


def _delete(level: Level, uid: str, request: Request, runtime: Runtime) -> dict[str, Any]:
    _require_uid(uid)
    try:
        outcome = delete_entity(runtime.store, runtime.sessions, level, uid, utc_now(), {
            "action": f"{level}_deleted", "remote_ip": _client_ip(request), "details": {"actor": actor_of(request)}})
    except NotFound:
        raise HTTPException(404, f"no {level} with that UID") from None
    except StudyProtected:
        raise HTTPException(409, "the study is protected: DELETE /api/studies/{uid}/protection first") from None
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    except StorageError as exc:
        raise HTTPException(503, f"object store unavailable ({exc.__class__.__name__}); nothing was deleted") from exc
    assert outcome is not None  # no still_wanted condition
    deleted, removed = outcome
    return {"deleted": deleted.counts(), "objects_removed": removed,
            "objects_pending": len(deleted.objects) - removed}


DELETE_DOC = ("Admin. Deletes the index rows (and the series, studies and patients left empty) with an audit record "
              "in one transaction, then the objects and their claims; objects the store could not remove now are "
              "removed by `pacs indexer` later (objects_pending). 404 unknown, 409 protected study, 422 bad UID.")


@router.delete("/api/studies/{uid}", summary="Delete a study (index and objects)", description=DELETE_DOC)
def delete_study(request: Request, uid: str = Path(max_length=64),
                 runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _delete("study", uid, request, runtime)


@router.delete("/api/series/{uid}", summary="Delete a series (index and objects)", description=DELETE_DOC)
def delete_series(request: Request, uid: str = Path(max_length=64),
                  runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _delete("series", uid, request, runtime)


@router.delete("/api/instances/{uid}", summary="Delete an instance (index and object)", description=DELETE_DOC)
def delete_instance(request: Request, uid: str = Path(max_length=64),
                    runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _delete("instance", uid, request, runtime)


def _protection(request: Request, uid: str, runtime: Runtime, protect: bool) -> dict[str, Any]:
    _require_uid(uid)
    now = utc_now()
    try:
        with runtime.sessions.begin() as session:
            if session.scalar(select(Study.pk).where(Study.study_instance_uid == uid)) is None:
                raise HTTPException(404, "no study with that UID")
            row = session.get(ProtectedStudy, uid)
            changed = (row is None) == protect
            if protect and row is None:
                row = ProtectedStudy(study_instance_uid=uid, protected_at=now, protected_by=actor_of(request)[:64])
                session.add(row)
            elif not protect and row is not None:
                session.delete(row)
            if changed:
                session.add(AuditEvent(occurred_at=now, action="study_protected" if protect else "study_unprotected",
                                       outcome="success", remote_aet="", remote_ip=_client_ip(request),
                                       details={"study_instance_uid": uid, "actor": actor_of(request)}))
            answer = {"study_instance_uid": uid, "protected": protect,
                      "protected_at": iso_utc(row.protected_at) if protect and row else None,
                      "protected_by": row.protected_by if protect and row else None}
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return answer


@router.get("/api/studies/{uid}/protection", summary="Whether a study is protected from retention and deletion")
def get_protection(request: Request, uid: str = Path(max_length=64),
                   runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    _require_uid(uid)
    try:
        with runtime.sessions() as session:
            if session.scalar(select(Study.pk).where(Study.study_instance_uid == uid)) is None:
                raise HTTPException(404, "no study with that UID")
            row = session.get(ProtectedStudy, uid)
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return {"study_instance_uid": uid, "protected": row is not None,
            "protected_at": iso_utc(row.protected_at) if row else None,
            "protected_by": row.protected_by if row else None}


@router.put("/api/studies/{uid}/protection", summary="Protect a study (admin): retention skips it, DELETE refuses it")
def protect_study(request: Request, uid: str = Path(max_length=64),
                  runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _protection(request, uid, runtime, True)


@router.delete("/api/studies/{uid}/protection", summary="Remove a study's protection (admin)", status_code=200)
def unprotect_study(request: Request, uid: str = Path(max_length=64),
                    runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return _protection(request, uid, runtime, False)


@router.get("/api/retention/preview", summary="Dry run of retention: the studies it would delete now")
def retention_preview(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    try:
        with runtime.sessions() as session:
            config = load_config(session, default_config_for(runtime.settings))
        report = preview(runtime.sessions, config, utc_now())
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return report.as_json()

