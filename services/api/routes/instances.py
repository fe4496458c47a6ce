"""GET /api/instances/{uid}: how and when an instance arrived, and that the stored object matches the index."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_runtime, get_session
from shared.db.models import Instance, Series, Study
from shared.events import iso_utc
from shared.runtime import Runtime
from shared.storage import StorageError
from shared.uids import is_valid_uid

router = APIRouter(tags=["instances"])


@router.get("/api/instances/{sop_instance_uid}", summary="Reception metadata of one instance")
def get_instance(
    sop_instance_uid: str = Path(max_length=64),
    runtime: Runtime = Depends(get_runtime),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    if not is_valid_uid(sop_instance_uid):
        raise HTTPException(422, "sop_instance_uid is not a valid UID (digits and dots, at most 64 characters)")
    try:
        row = session.execute(
            select(Instance, Series.series_instance_uid, Series.last_update, Study.study_instance_uid)
            .join(Series, Instance.series_fk == Series.pk)
            .join(Study, Series.study_fk == Study.pk)
            .where(Instance.sop_instance_uid == sop_instance_uid)
        ).first()
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    if row is None:
        raise HTTPException(404, "no instance with that SOP Instance UID")
    instance: Instance = row.Instance
    try:
        stored = runtime.store.stat(instance.object_key)
    except StorageError as exc:
        raise HTTPException(503, f"object store unavailable ({exc.__class__.__name__})") from exc
    return {
        "sop_instance_uid": instance.sop_instance_uid,
        "sop_class_uid": instance.sop_class_uid,
        "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "transfer_syntax": instance.transfer_syntax,
        "remote_aet": instance.remote_aet,
        "called_aet": instance.called_aet,
        "remote_ip": instance.remote_ip,
        "received_at": iso_utc(instance.received_at),
        "series_last_update": iso_utc(row.last_update),
        "size": instance.size,
        "stored_size": stored.size if stored else None,
        "sha256": instance.sha256,
    }
