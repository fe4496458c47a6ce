"""GET /api/status: what the node holds, what waits to be indexed, and which services are alive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_runtime, get_session
from shared.db.models import DeadLetter, Instance, Patient, Series, ServiceHeartbeat, Study
from shared.events import iso_utc, utc_now
from shared.runtime import Runtime
from shared.storage import StorageError
from shared.version import VERSION

router = APIRouter(tags=["status"])

INGEST_WINDOW_MINUTES = 5


def _services(session: Session, stale_after: timedelta) -> dict[str, list[dict[str, Any]]]:
    now = utc_now()
    services: dict[str, list[dict[str, Any]]] = {}
    for beat in session.scalars(select(ServiceHeartbeat).order_by(ServiceHeartbeat.instance_name)):
        if now - beat.last_seen > stale_after * 10:
            continue  # long gone: not listed
        services.setdefault(beat.service, []).append({
            "instance": beat.instance_name,
            "alive": now - beat.last_seen <= stale_after,
            "started_at": iso_utc(beat.started_at),
            "last_seen": iso_utc(beat.last_seen),
            # the listener's counters for /metrics are left out here (GET /metrics shows them)
            **{key: value for key, value in beat.details.items() if key != "metrics"},
        })
    return services


@router.get("/api/status", summary="Counts, storage, queue and services of the node")
def status(runtime: Runtime = Depends(get_runtime), session: Session = Depends(get_session)) -> dict[str, Any]:
    try:
        counts = {
            "patients": session.scalar(select(func.count()).select_from(Patient)) or 0,
            "studies": session.scalar(select(func.count()).select_from(Study)) or 0,
            "series": session.scalar(select(func.count()).select_from(Series)) or 0,
            "instances": session.scalar(select(func.count()).select_from(Instance)) or 0,
        }
        stored_bytes = session.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0
        dead_letters = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
        since = utc_now() - timedelta(minutes=INGEST_WINDOW_MINUTES)
        recent = session.scalar(select(func.count()).select_from(Instance).where(Instance.received_at >= since)) or 0
        stale_after = timedelta(seconds=3 * runtime.settings.heartbeat_interval_seconds)
        services = _services(session, stale_after)
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    pending: int | None
    try:
        pending = runtime.ledger.count()
        store_available = True
    except StorageError:
        pending, store_available = None, False  # unknown while the object store is unreachable
    return {
        "version": VERSION,
        "ae_title": runtime.settings.ae_title,
        "counts": counts,
        "storage": {"objects": counts["instances"], "bytes": int(stored_bytes), "available": store_available,
                    "url": runtime.store.description},
        "queue": {"pending": pending, "dead_letter": dead_letters},
        "services": services,
        # received in the last minutes, as indexed (instances still pending are counted once indexed)
        "ingest": {"window_minutes": INGEST_WINDOW_MINUTES, "instances": recent,
                   "per_minute": round(recent / INGEST_WINDOW_MINUTES, 1)},
    }
