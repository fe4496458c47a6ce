"""Index a batch of stored instances. Safe to run twice: replays change nothing."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from services.indexer.extract import IndexRecord, KnownContent, UnindexableObject, extract
from services.indexer.outbox import record_instance_events
from services.indexer.upsert import audit, record_dead_letter, upsert_instances
from shared.events import DuplicateReceived, InstanceStored, utc_now
from shared.runtime import Runtime
from shared.storage import ObjectNotFound, ObjectStore, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

COPY_IN_MEMORY_BYTES = 16 << 20
COPY_CHUNK_BYTES = 1 << 20


class TransientIndexError(Exception):
    """A dependency (index database or object store) failed; the task is retried later."""


@dataclass
class BatchResult:
    indexed: int = 0
    already_indexed: int = 0
    dead_lettered: int = 0


def _load(runtime: Runtime, event: InstanceStored) -> IndexRecord:
    try:
        with _readable(runtime.store, event) as (part10, known):
            record = extract(part10, known)
    except ObjectNotFound as exc:
        raise UnindexableObject("stored object is missing") from exc
    except OSError as exc:  # reading a local object failed: retried like any storage failure
        raise StorageUnavailable(f"object read failed ({exc.__class__.__name__})") from exc
    if record.sop_instance_uid != event.sop_instance_uid:
        raise UnindexableObject("stored object has another SOP Instance UID than its event")
    return record


@contextmanager
def _readable(store: ObjectStore, event: InstanceStored) -> Iterator[tuple[BinaryIO, KnownContent | None]]:
    """The object as a seekable file that extract() reads only up to the pixel data: a local object directly, a
    remote one once copied (to memory while small, then to disk), so a 1 GB instance is never held whole and a
    network failure mid-copy stays a storage failure (retried), not an unreadable object (dead-lettered). With it
    the size and hash the event tells, when the object still carries the event's stamp (the very file the event
    describes: not hashed again)."""
    with store.open(event.object_key) as stream:
        stamped = event.object_stamp is not None and store.stamp(stream) == event.object_stamp
        known = KnownContent(event.size, event.sha256) if stamped else None
        if stream.seekable():
            yield stream, known
            return
        with tempfile.SpooledTemporaryFile(max_size=COPY_IN_MEMORY_BYTES) as copy:
            try:
                shutil.copyfileobj(stream, copy, COPY_CHUNK_BYTES)
            except StorageError:
                raise
            except Exception as exc:  # the SDK's stream raises its own kinds
                raise StorageUnavailable(f"object store read failed ({exc.__class__.__name__})") from exc
            copy.seek(0)
            yield copy, known  # type: ignore[misc]


def _is_transient(exc: SQLAlchemyError) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _write(runtime: Runtime, loaded: list[tuple[InstanceStored, IndexRecord]],
           failed: list[tuple[InstanceStored, str]], result: BatchResult) -> None:
    with runtime.sessions.begin() as session:
        new = upsert_instances(session, loaded, utc_now())
        result.indexed += len(new)
        result.already_indexed += len(loaded) - len(new)
        record_instance_events(session, new)  # webhooks and auto-forward rules (outbox, same transaction)
        for event, reason in failed:
            record_dead_letter(session, event, reason)
            result.dead_lettered += 1


def _write_one_by_one(runtime: Runtime, loaded: list[tuple[InstanceStored, IndexRecord]],
                      failed: list[tuple[InstanceStored, str]], result: BatchResult) -> None:
    """After a batch hit a permanent database error: isolate the instance that causes it."""
    for item in loaded:
        try:
            _write(runtime, [item], [], result)
        except SQLAlchemyError as exc:
            if _is_transient(exc):
                raise
            failed.append((item[0], f"index database refused the record ({exc.__class__.__name__})"))
    _write(runtime, [], failed, result)


def index_events(runtime: Runtime, events: list[InstanceStored]) -> BatchResult:
    result = BatchResult()
    loaded: list[tuple[InstanceStored, IndexRecord]] = []
    failed: list[tuple[InstanceStored, str]] = []
    try:
        for event in events:
            try:
                loaded.append((event, _load(runtime, event)))
            except UnindexableObject as exc:
                failed.append((event, str(exc)))
        try:
            _write(runtime, loaded, failed, result)
        except SQLAlchemyError as exc:
            if _is_transient(exc):
                raise
            result = BatchResult()
            _write_one_by_one(runtime, loaded, failed, result)
    except SQLAlchemyError as exc:
        raise TransientIndexError(f"index database unavailable ({exc.__class__.__name__})") from exc
    except StorageError as exc:
        raise TransientIndexError(f"object store unavailable ({exc.__class__.__name__})") from exc
    if failed:
        log.error("index.dead_lettered count=%d reasons=%s", len(failed), sorted({reason for _, reason in failed}))
    for event in events:
        try:
            runtime.ledger.resolve(event.sop_instance_uid)
        except StorageError:
            log.warning("index.marker_not_removed (the sweeper will replay it; replay is a no-op)")
    return result


def record_duplicates(runtime: Runtime, events: list[DuplicateReceived]) -> None:
    try:
        with runtime.sessions.begin() as session:
            for event in events:
                audit(session, event.event_id, "duplicate_conflict", "first_kept", event.reception.remote_aet,
                      event.reception.remote_ip,
                      {"sop_instance_uid": event.sop_instance_uid, "stored_sha256": event.stored_sha256,
                       "received_sha256": event.received_sha256}, occurred_at=event.occurred_at)
    except SQLAlchemyError as exc:
        raise TransientIndexError(f"index database unavailable ({exc.__class__.__name__})") from exc
