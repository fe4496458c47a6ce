"""Deleting studies, series and instances consistently from the index and the object store.

Order (so that a crash at any point never leaves index rows that name missing objects, and no send answered
Success after the deletion was decided loses its instance):

1. One index transaction: the instance rows are deleted, then the series, studies and patients left empty; a
   ``pending_deletions`` row per object is written, and the audit record. Before it commits, each instance's claim
   is marked for deletion (shared.storage.claims): from then on a send of that SOP Instance UID is refused
   (C-STORE 0xA701, STOW-RS 0xA701) rather than answered Success on an object about to go. If the transaction
   does not commit, the marks are taken back.
2. Outside it: the store is settled (no journal of a running or crashed process can bring a removed object back,
   shared.storage.journal), then each object is removed, then its claim and mark, then its ``pending_deletions``
   row. A send after that stores the instance anew.

A crash (or an object store down) after step 1 leaves objects that nothing in the index names, each still listed in
``pending_deletions`` and still marked: the lifecycle loop of `pacs indexer` (services/indexer/lifecycle.py)
finishes their removal. A mark that no deletion works on (a crash between marking and committing) is settled by the
same loop: taken back when the index still holds the instance, else released.

Protected studies (``protected_studies``) are refused (ProtectedStudy) by REST deletion and skipped by retention.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import AuditEvent, Instance, Patient, Series, Study
from shared.db.storage_models import PendingDeletion, ProtectedStudy
from shared.storage import ObjectStore, StorageError
from shared.storage.claims import ClaimRegistry, deleting_key

STALE_MARK_SECONDS = 600.0  # a deletion mark older than this with no pending_deletions row is settled

log = logging.getLogger(__name__)

Level = Literal["study", "series", "instance"]


class NotFound(LookupError):
    """No study, series or instance with that UID in the index."""


class StudyProtected(Exception):
    """The study (of the series or instance) is protected: delete refused."""


@dataclass
class Deleted:
    studies: int = 0
    series: int = 0
    instances: int = 0
    bytes: int = 0
    objects: list[tuple[int, str, str]] = field(default_factory=list)  # (pending_deletions pk, SOP UID, key)

    def counts(self) -> dict[str, int]:
        return {"studies": self.studies, "series": self.series, "instances": self.instances, "bytes": self.bytes}


def is_protected(session: Session, study_instance_uid: str) -> bool:
    return session.get(ProtectedStudy, study_instance_uid) is not None


def _study_of(session: Session, level: Level, uid: str) -> tuple[str, list[int]]:
    """(Study Instance UID, pks of the instances to delete) of the entity; raise NotFound."""
    if level == "study":
        study = session.scalars(select(Study.study_instance_uid).where(Study.study_instance_uid == uid)).first()
        condition = Series.study_fk == select(Study.pk).where(Study.study_instance_uid == uid).scalar_subquery()
        pks = select(Instance.pk).join(Series, Instance.series_fk == Series.pk).where(condition)
    elif level == "series":
        study = session.scalars(select(Study.study_instance_uid).join(Series, Series.study_fk == Study.pk)
                                .where(Series.series_instance_uid == uid)).first()
        pks = select(Instance.pk).join(Series, Instance.series_fk == Series.pk).where(
            Series.series_instance_uid == uid)
    else:
        study = session.scalars(select(Study.study_instance_uid).join(Series, Series.study_fk == Study.pk)
                                .join(Instance, Instance.series_fk == Series.pk)
                                .where(Instance.sop_instance_uid == uid)).first()
        pks = select(Instance.pk).where(Instance.sop_instance_uid == uid)
    if study is None:
        raise NotFound(level)
    return study, list(session.scalars(pks))


def delete_rows(session: Session, level: Level, uid: str, now: datetime, audit: dict[str, Any],
                respect_protection: bool = True) -> Deleted:
    """Step 1 (in the caller's transaction): delete the index rows of the entity, queue its objects, audit.

    ``audit``: ``action``, ``outcome``, ``remote_ip`` and extra ``details`` of the audit record."""
    study_uid, instance_pks = _study_of(session, level, uid)
    if respect_protection and is_protected(session, study_uid):
        raise StudyProtected(study_uid)
    result = Deleted()
    rows = session.execute(select(Instance.pk, Instance.sop_instance_uid, Instance.object_key, Instance.size,
                                  Instance.series_fk, Instance.patient_fk).where(Instance.pk.in_(instance_pks))).all()
    series_pks = {row.series_fk for row in rows}
    patient_pks = {row.patient_fk for row in rows}
    if level == "series":
        series_pks |= set(session.scalars(select(Series.pk).where(Series.series_instance_uid == uid)))
    if level == "study":
        series_pks |= set(session.scalars(select(Series.pk).join(Study, Series.study_fk == Study.pk)
                                          .where(Study.study_instance_uid == uid)))
    pendings = [PendingDeletion(sop_instance_uid=row.sop_instance_uid, object_key=row.object_key, created_at=now)
                for row in rows]
    session.add_all(pendings)
    result.bytes = sum(row.size for row in rows)
    session.flush()
    if instance_pks:
        session.execute(delete(Instance).where(Instance.pk.in_(instance_pks)))
    result.instances = len(rows)
    study_pks = set(session.scalars(select(Series.study_fk).where(Series.pk.in_(series_pks)))) if series_pks else set()
    study_pks |= set(session.scalars(select(Study.pk).where(Study.study_instance_uid == study_uid)))
    empty_series = [pk for pk in series_pks
                    if not session.scalar(select(exists().where(Instance.series_fk == pk)))]
    if empty_series:
        session.execute(delete(Series).where(Series.pk.in_(empty_series)))
    result.series = len(empty_series)
    for study_pk in study_pks:
        patient_pks |= set(session.scalars(select(Study.patient_fk).where(Study.pk == study_pk)))
    empty_studies = [pk for pk in study_pks if not session.scalar(select(exists().where(Series.study_fk == pk)))]
    if empty_studies:
        session.execute(delete(Study).where(Study.pk.in_(empty_studies)))
    result.studies = len(empty_studies)
    orphans = [pk for pk in patient_pks
               if not session.scalar(select(exists().where(Study.patient_fk == pk)))
               and not session.scalar(select(exists().where(Instance.patient_fk == pk)))]
    if orphans:
        session.execute(delete(Patient).where(Patient.pk.in_(orphans)))
    session.add(AuditEvent(occurred_at=now, action=audit["action"], outcome=audit.get("outcome", "success"),
                           remote_aet="", remote_ip=audit.get("remote_ip", ""),
                           details={"level": level, "uid": uid, "study_instance_uid": study_uid, **result.counts(),
                                    **audit.get("details", {})}))
    result.objects = [(pending.pk, pending.sop_instance_uid, pending.object_key) for pending in pendings]
    return result


def delete_entity(store: ObjectStore, sessions: sessionmaker[Session], level: Level, uid: str, now: datetime,
                  audit: dict[str, Any], respect_protection: bool = True,
                  still_wanted: Callable[[Session], bool] | None = None) -> tuple[Deleted, int] | None:
    """Steps 1 and 2: (what was deleted from the index, how many objects were removed now), or None when
    ``still_wanted`` (asked in the deleting transaction) says no. Raises NotFound, StudyProtected, SQLAlchemyError
    (nothing deleted) or StorageError (the marks could not be written: nothing deleted)."""
    claims = ClaimRegistry(store)
    marked: list[tuple[str, str]] = []
    try:
        with sessions.begin() as session:
            if still_wanted is not None and not still_wanted(session):
                return None
            deleted = delete_rows(session, level, uid, now, audit, respect_protection)
            for _, sop_instance_uid, key in deleted.objects:
                claims.mark_deleting(sop_instance_uid, key)
                marked.append((sop_instance_uid, key))
    except BaseException:
        _take_back(claims, marked)
        raise
    return deleted, remove_objects(store, sessions, deleted.objects)


def _take_back(claims: ClaimRegistry, marked: list[tuple[str, str]]) -> None:
    try:
        for sop_instance_uid, key in marked:
            claims.unmark_deleting(sop_instance_uid, key)
    except StorageError:
        log.warning("deletion.marks_left count=%d (the lifecycle loop takes them back)", len(marked))


def remove_objects(store: ObjectStore, sessions: sessionmaker[Session],
                   objects: list[tuple[int, str, str]]) -> int:
    """Step 2: remove each object, then its claim and mark, then its pending_deletions row; returns how many were
    removed. A store failure leaves the rest queued for the lifecycle loop."""
    claims = ClaimRegistry(store)
    done: list[int] = []
    try:
        if objects:
            store.settle()  # no journal may bring an object back once it is removed
        for pk, sop_instance_uid, key in objects:
            store.delete(key)
            if claims.read(sop_instance_uid) in (key, None):
                claims.release(sop_instance_uid)
            else:  # the claim names another object (stored anew since): keep it, drop the mark only
                store.delete(deleting_key(sop_instance_uid))
            done.append(pk)
    except StorageError as exc:
        log.warning("deletion.store_unavailable left=%d error=%s", len(objects) - len(done), exc.__class__.__name__)
    finally:
        if done:
            with sessions.begin() as session:
                session.execute(delete(PendingDeletion).where(PendingDeletion.pk.in_(done)))
    return len(done)


def finish_pending_deletions(store: ObjectStore, sessions: sessionmaker[Session], batch: int = 500) -> int:
    """The lifecycle loop's share: remove objects whose index rows are gone (after a crash or a store outage)."""
    removed = 0
    while True:
        with sessions() as session:
            queued = [(row.pk, row.sop_instance_uid, row.object_key) for row in session.scalars(
                select(PendingDeletion).order_by(PendingDeletion.pk).limit(batch))]
        if not queued:
            return removed
        # An instance sent again (and indexed) since keeps its object: only its queue row goes.
        with sessions() as session:
            live = set(session.scalars(select(Instance.object_key).where(
                Instance.object_key.in_([key for _, _, key in queued]))))
        if live:
            with sessions.begin() as session:
                session.execute(delete(PendingDeletion).where(
                    PendingDeletion.pk.in_([pk for pk, _, key in queued if key in live])))
        count = remove_objects(store, sessions, [item for item in queued if item[2] not in live])
        removed += count
        if count < len([item for item in queued if item[2] not in live]):
            return removed  # the store failed: try again on the next pass


def settle_stale_marks(store: ObjectStore, sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """The lifecycle loop's share: deletion marks older than STALE_MARK_SECONDS that no pending deletion works on
    (a crash between marking and committing, or after removing an object). Taken back when the index still holds
    the instance, else released; returns how many were settled."""
    claims = ClaimRegistry(store)
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=STALE_MARK_SECONDS)
    stale = [entry for entry in claims.deletion_entries() if entry.listed_at < cutoff]
    if not stale:
        return 0
    uids = [entry.sop_instance_uid for entry in stale]
    with sessions() as session:
        working = set(session.scalars(select(PendingDeletion.sop_instance_uid).where(
            PendingDeletion.sop_instance_uid.in_(uids))))
        held = {uid: key for uid, key in session.execute(select(Instance.sop_instance_uid, Instance.object_key)
                                                          .where(Instance.sop_instance_uid.in_(uids)))}
    settled = 0
    for entry in stale:
        if entry.sop_instance_uid in working:
            continue
        if entry.sop_instance_uid in held:
            claims.unmark_deleting(entry.sop_instance_uid, held[entry.sop_instance_uid])
        elif claims.read(entry.sop_instance_uid) in (entry.key, None):
            claims.release(entry.sop_instance_uid)
        else:
            store.delete(deleting_key(entry.sop_instance_uid))
        settled += 1
    if settled:
        log.info("deletion.stale_marks_settled count=%d", settled)
    return settled


def pending_deletion_count(session: Session) -> int:
    return int(session.scalar(select(func.count(PendingDeletion.pk))) or 0)
