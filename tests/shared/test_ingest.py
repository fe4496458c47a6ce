"""The ingest core tells the indexer which object it wrote (its stamp), so that the indexer need not hash it again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from shared.events import InstanceStored, Reception, utc_now
from shared.ingest import Ingest, IngestOutcome
from shared.ingest_identify import identify
from shared.pending import PendingLedger
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.storage.filesystem import FilesystemObjectStore
from tests.factory import encode_dataset, make_image
from tests.stamps import require_stamps


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    require_stamps(tmp_path)
    return FilesystemObjectStore(tmp_path / "objects")


def test_the_indexing_event_of_a_new_object_carries_its_stamp_and_the_pending_marker_does_not(
        store: FilesystemObjectStore) -> None:
    submitted: list[tuple[str, dict[str, Any]]] = []
    ledger = PendingLedger(store)
    ingest = Ingest(store, ledger, lambda task, event: submitted.append((task, event)))
    data = encode_dataset(make_image(), ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())

    stored = ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data, reception)
    again = ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data, reception)

    assert (stored.outcome, again.outcome) == (IngestOutcome.STORED, IngestOutcome.IDENTICAL)
    assert [task for task, _ in submitted] == [INDEX_INSTANCES_TASK]  # the identical re-send hands over nothing
    event = InstanceStored.model_validate(submitted[0][1])
    with store.open(stored.object_key) as stream:
        assert event.object_stamp is not None and event.object_stamp == store.stamp(stream)
    (marker,) = ledger.stale(older_than_seconds=-1)
    assert marker.object_stamp is None  # written before the object existed: a replay of it is hashed


def test_the_marker_is_named_after_the_answer_and_before_the_event_is_handed_over(
        store: FilesystemObjectStore) -> None:
    ledger = PendingLedger(store)
    markers_when_submitted: list[int] = []
    ingest = Ingest(store, ledger, lambda task, event: markers_when_submitted.append(ledger.count()))
    data = encode_dataset(make_image(), ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())

    stored, finish = ingest.store_instance_first(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian,
                                                 data, reception)
    assert store.stat(stored.object_key) is not None  # durable: the answer may go now
    assert ledger.count() == 0 and markers_when_submitted == []
    finish()
    assert markers_when_submitted == [1]  # the indexer removes a marker that exists


CUT_BEFORE_FINISH = """
import os, sys
from pathlib import Path
from pydicom.uid import ExplicitVRLittleEndian
from shared.events import Reception, utc_now
from shared.ingest import Ingest
from shared.ingest_identify import identify
from shared.pending import PendingLedger
from shared.storage.filesystem import FilesystemObjectStore
from tests.factory import encode_dataset, make_image

store = FilesystemObjectStore(Path(sys.argv[1]))
ingest = Ingest(store, PendingLedger(store), lambda task, event: None)
data = encode_dataset(make_image(), ExplicitVRLittleEndian)
reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())
stored, finish = ingest.store_instance_first(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data,
                                             reception)
print(stored.object_key, flush=True)
os._exit(0)  # answered, then gone before the marker was named
"""


def test_a_process_gone_between_the_answer_and_the_marker_leaves_the_marker_to_recovery(tmp_path: Path) -> None:
    require_stamps(tmp_path)
    root = tmp_path / "objects"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", CUT_BEFORE_FINISH, str(root)], cwd=repo, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 0, result.stderr
    store = FilesystemObjectStore(root)
    ledger = PendingLedger(store)
    assert ledger.count() == 0
    store.recover()
    (marker,) = ledger.stale(older_than_seconds=-1)
    assert marker.object_key == result.stdout.strip()


class FailingAccounting:
    """Storage usage whose bookkeeping fails once the object is written."""

    def admit(self, size: int, max_bytes: int | None, max_instances: int | None) -> None:
        pass

    def added(self, size: int) -> None:
        raise RuntimeError("bookkeeping failed")


def test_a_failure_after_the_object_was_written_still_names_its_marker(store: FilesystemObjectStore) -> None:
    ledger = PendingLedger(store)
    ingest = Ingest(store, ledger, lambda task, event: None, usage=FailingAccounting())  # type: ignore[arg-type]
    data = encode_dataset(make_image(), ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())

    with pytest.raises(RuntimeError):
        ingest.store_instance_first(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data, reception)
    assert ledger.count() == 1  # the object exists: the sweeper must find it


def test_a_failed_object_write_leaves_no_marker(store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage import StorageUnavailable

    ledger = PendingLedger(store)
    ingest = Ingest(store, ledger, lambda task, event: None)
    data = encode_dataset(make_image(), ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())
    put_new = store.put_new

    def failing_for_objects(key: str, *args: Any, **kwargs: Any) -> Any:
        if key.endswith(".dcm"):
            raise StorageUnavailable("object store unavailable")
        return put_new(key, *args, **kwargs)

    monkeypatch.setattr(store, "put_new", failing_for_objects)
    with pytest.raises(StorageUnavailable):
        ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data, reception)
    assert ledger.count() == 0
    store.close()  # a last checkpoint: no segment is still held by the dropped marker
    assert list((store.root / ".journal").glob("*.wal")) == []


def test_a_large_object_is_named_after_the_answer_then_its_marker_then_its_event(
        store: FilesystemObjectStore) -> None:
    ledger = PendingLedger(store)
    seen_when_submitted: list[tuple[bool, int]] = []
    submitted: list[dict[str, Any]] = []

    def submit(task: str, event: dict[str, Any]) -> None:
        seen_when_submitted.append((store.stat(event["object_key"]) is not None, ledger.count()))
        submitted.append(event)

    ingest = Ingest(store, ledger, submit)
    data = encode_dataset(make_image(rows=256, columns=256), ExplicitVRLittleEndian)  # 128 KiB of pixels
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())

    stored, finish = ingest.store_instance_first(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian,
                                                 data, reception)
    assert stored.outcome is IngestOutcome.STORED
    assert store.stat(stored.object_key) is None and ledger.count() == 0  # durable in the journal: the answer may go
    finish()

    assert seen_when_submitted == [(True, 1)]
    with store.open(stored.object_key) as stream:
        assert stream.read().endswith(data) and InstanceStored.model_validate(submitted[0]).object_stamp == \
            store.stamp(stream)


def test_a_large_object_that_cannot_be_named_after_the_answer_is_left_with_its_marker_to_the_journal(
        store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage import StorageUnavailable
    from shared.storage.filesystem import _NewFile

    ledger = PendingLedger(store)
    submitted: list[str] = []
    ingest = Ingest(store, ledger, lambda task, event: submitted.append(task))
    data = encode_dataset(make_image(rows=256, columns=256), ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())
    stored, finish = ingest.store_instance_first(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian,
                                                 data, reception)
    write_reserved = _NewFile.write_reserved

    def failing_write(self: _NewFile, parts: list[bytes]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_NewFile, "write_reserved", failing_write)
    with pytest.raises(StorageUnavailable):
        finish()
    monkeypatch.setattr(_NewFile, "write_reserved", write_reserved)
    assert submitted == [] and ledger.count() == 0  # nothing points the indexer at an object that is not there

    deadline = time.monotonic() + 15  # the journal's checkpointer replays what it kept
    while ledger.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    (marker,) = ledger.stale(older_than_seconds=-1)  # the sweeper's way to the index
    assert marker.object_key == stored.object_key and store.get(stored.object_key).endswith(data)


def test_a_conflicting_re_send_is_decided_once(store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[str] = []
    ingest = Ingest(store, PendingLedger(store), lambda task, event: submitted.append(task))
    image = make_image()
    data = encode_dataset(image, ExplicitVRLittleEndian)
    reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())
    ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data, reception)
    image.PatientName = "Other^Content"
    other = encode_dataset(image, ExplicitVRLittleEndian)
    decisions: list[str] = []
    decide = Ingest._stored_otherwise_encoded

    def counted(*args: Any) -> bool:
        decisions.append("decided")
        return decide(*args)

    monkeypatch.setattr(Ingest, "_stored_otherwise_encoded", staticmethod(counted))
    conflict = ingest.store_instance(identify(other, ExplicitVRLittleEndian), ExplicitVRLittleEndian, other,
                                     reception)

    assert conflict.outcome is IngestOutcome.CONFLICT and decisions == ["decided"]  # re-encoding it costs: once
    assert submitted == [INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK]
