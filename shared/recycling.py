"""Recycling: with ``storage_recycle`` and a storage limit set, the oldest unprotected studies are deleted so that
the node stays under RECYCLE_TARGET of its limits and ingest is not refused (ingest still refuses at 100%).

Run by the lifecycle loop of `pacs indexer` (services/indexer/lifecycle.py) under the retention lock (one indexer at
a time on PostgreSQL). Oldest = least recently updated; never a protected study, never a study that received an
instance within RECYCLE_GRACE (still receiving). Each study is deleted as DELETE /api/studies/{uid} does
(shared.deletion), audited as ``recycled``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine, exists, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Instance, Study
from shared.db.storage_models import ProtectedStudy
from shared.deletion import NotFound, StudyProtected, delete_entity
from shared.node_config import NodeConfig
from shared.retention import retention_lock
from shared.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

RECYCLE_TARGET = 0.9
RECYCLE_GRACE = timedelta(hours=1)
BATCH = 50


def _over(instances: int, size: int, config: NodeConfig) -> bool:
    return ((config.storage_max_instances is not None and instances > config.storage_max_instances * RECYCLE_TARGET)
            or (config.storage_max_bytes is not None and size > config.storage_max_bytes * RECYCLE_TARGET))


def _oldest(session: Session, now: datetime) -> list[str]:
    return list(session.scalars(
        select(Study.study_instance_uid)
        .where(Study.last_update < now - RECYCLE_GRACE,
               ~exists().where(ProtectedStudy.study_instance_uid == Study.study_instance_uid))
        .order_by(Study.last_update, Study.study_instance_uid).limit(BATCH)))


def recycle(engine: Engine, sessions: sessionmaker[Session], store: ObjectStore, config: NodeConfig,
            now: datetime) -> int:
    """Delete oldest studies until under the target; returns how many studies were deleted."""
    if not config.storage_recycle or (config.storage_max_bytes is None and config.storage_max_instances is None):
        return 0
    deleted = 0
    with retention_lock(engine) as acquired:
        if not acquired:
            return 0
        with sessions() as session:
            instances, size = session.execute(
                select(func.count(Instance.pk), func.coalesce(func.sum(Instance.size), 0))).one()
            candidates = _oldest(session, now) if _over(instances, size, config) else []
        for study in candidates:
            if not _over(instances, size, config):
                break
            try:
                outcome = delete_entity(store, sessions, "study", study, now, {
                    "action": "recycled", "details": {"actor": "recycling"}})
            except (NotFound, StudyProtected):
                continue
            except (SQLAlchemyError, StorageError) as exc:
                log.warning("recycling.delete_failed error=%s", exc.__class__.__name__)
                break
            assert outcome is not None  # no still_wanted condition
            result, _ = outcome
            instances, size, deleted = instances - result.instances, size - result.bytes, deleted + 1
    if deleted:
        log.info("recycling.deleted studies=%d", deleted)
    return deleted
