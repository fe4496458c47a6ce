"""Deletion against sends of the same instances, on SQLite and PostgreSQL: once a deletion is decided no send is
answered Success on an object about to be removed; a deletion that cannot mark its claims deletes nothing; marks
left by a crash are settled by the lifecycle pass."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

import shared.deletion
from shared.db.models import Instance
from shared.deletion import delete_entity, settle_stale_marks
from shared.events import Reception, utc_now
from shared.ingest import Ingest, IngestOutcome
from shared.ingest_identify import identify
from shared.runtime import Runtime
from shared.storage import StorageUnavailable
from shared.storage.claim_anchors import ANCHORS_FOLDER
from shared.storage.claims import ClaimRegistry, InstanceBeingDeleted
from tests.factory import dataset_start
from tests.shared.test_retention import held, store_study


def stored_part10(runtime: Runtime, sop_instance_uid: str) -> bytes:
    key = ClaimRegistry(runtime.store).read(sop_instance_uid)
    assert key is not None
    return runtime.store.get(key)


def resend(runtime: Runtime, sop_instance_uid: str) -> IngestOutcome:
    """Send the stored instance again, byte for byte, through the ingest core."""
    return send_bytes(runtime, stored_part10(runtime, sop_instance_uid))


def send_bytes(runtime: Runtime, part10: bytes) -> IngestOutcome:
    data = part10[dataset_start(part10):]
    ingest = Ingest(runtime.store, runtime.ledger, lambda task, payload: None)
    return ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data,
                                 Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1",
                                           received_at=utc_now())).outcome


def instance_uids(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Instance.sop_instance_uid).order_by(Instance.pk)))


def test_between_the_decision_and_the_removal_a_resend_is_refused_and_after_it_stored_anew(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = store_study(runtime, count=2)
    assert len(list((runtime.store.root / ANCHORS_FOLDER).iterdir())) == 1  # the claims of the study's series
    first, _ = instance_uids(runtime)
    first_part10 = stored_part10(runtime, first)
    real_remove = shared.deletion.remove_objects
    seen: dict[str, Any] = {}

    def remove_after_a_resend(store: Any, sessions: Any, objects: Any) -> int:
        with pytest.raises(InstanceBeingDeleted):  # the index rows are gone, the objects still there
            send_bytes(runtime, first_part10)
        seen["refused"] = True
        return real_remove(store, sessions, objects)

    monkeypatch.setattr(shared.deletion, "remove_objects", remove_after_a_resend)
    outcome = delete_entity(runtime.store, runtime.sessions, "study", study, utc_now(), {"action": "study_deleted"})
    assert outcome is not None and outcome[1] == 2 and seen == {"refused": True}
    assert held(runtime) == {"studies": set(), "instances": 0, "objects": 0, "claims": 0, "pending_deletions": 0}
    assert list(runtime.store.list(".deleting/")) == []
    assert list((runtime.store.root / ANCHORS_FOLDER).iterdir()) == []  # no claim left: no anchor either
    assert send_bytes(runtime, first_part10) is IngestOutcome.STORED  # the deletion is over: a new instance


def test_a_deletion_that_cannot_mark_its_claims_deletes_nothing(runtime: Runtime,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store_study(runtime, count=3)
    study = store_study(runtime, count=2)
    before = held(runtime)
    real_mark = ClaimRegistry.mark_deleting
    calls: list[str] = []

    def mark_then_fail(self: ClaimRegistry, sop_instance_uid: str, key: str) -> None:
        calls.append(sop_instance_uid)
        if len(calls) == 2:
            raise StorageUnavailable("object store down")
        real_mark(self, sop_instance_uid, key)

    monkeypatch.setattr(ClaimRegistry, "mark_deleting", mark_then_fail)
    with pytest.raises(StorageUnavailable):
        delete_entity(runtime.store, runtime.sessions, "study", study, utc_now(), {"action": "study_deleted"})
    assert held(runtime) == before
    assert list(runtime.store.list(".deleting/")) == []
    assert resend(runtime, calls[0]) is IngestOutcome.IDENTICAL  # the first mark was taken back


def test_marks_left_by_a_crash_are_settled_by_the_lifecycle_pass(runtime: Runtime) -> None:
    store_study(runtime, count=2)
    kept, gone = instance_uids(runtime)
    claims = ClaimRegistry(runtime.store)
    kept_key, gone_key = claims.read(kept), claims.read(gone)
    assert kept_key and gone_key
    claims.mark_deleting(kept, kept_key)  # crashed before its transaction committed: the index still holds it
    with runtime.sessions.begin() as session:  # removed from index and store, crashed before releasing the claim
        session.delete(session.scalars(select(Instance).where(Instance.sop_instance_uid == gone)).one())
    claims.mark_deleting(gone, gone_key)
    runtime.store.delete(gone_key)

    assert settle_stale_marks(runtime.store, runtime.sessions) == 0  # fresh marks: a deletion may be working
    assert settle_stale_marks(runtime.store, runtime.sessions, utc_now() + timedelta(minutes=11)) == 2
    assert list(runtime.store.list(".deleting/")) == []
    assert claims.read(kept) == kept_key and resend(runtime, kept) is IngestOutcome.IDENTICAL
    assert claims.read(gone) is None
