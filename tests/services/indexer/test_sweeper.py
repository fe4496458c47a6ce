"""The sweeper hands instances that stayed pending too long to the indexer again, once per backoff."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from services.indexer.sweeper import Sweeper
from shared.events import InstanceStored, Reception
from shared.pending import PendingLedger, marker_key
from shared.storage.filesystem import FilesystemObjectStore

GRACE = 30.0


class RecordingPublish:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, object]]] = []

    def __call__(self, batch: list[dict[str, object]]) -> None:
        self.batches.append(batch)

    def uids(self) -> list[object]:
        return [event["sop_instance_uid"] for batch in self.batches for event in batch]


class Archive:
    """An object store with its pending ledger, where markers can be aged."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.store = FilesystemObjectStore(root)
        self.ledger = PendingLedger(self.store)

    def stored(self, age_seconds: float, with_object: bool = True) -> InstanceStored:
        sop, study, series = generate_uid(), generate_uid(), generate_uid()
        event = InstanceStored(
            sop_instance_uid=sop, sop_class_uid=CTImageStorage, study_instance_uid=study,
            series_instance_uid=series, transfer_syntax=ExplicitVRLittleEndian,
            object_key=f"{study}/{series}/{sop}.dcm", size=4, sha256=hashlib.sha256(b"DICM").hexdigest(),
            reception=Reception(remote_aet="MODALITY", called_aet="PACS", remote_ip="127.0.0.1",
                                received_at=datetime.now(timezone.utc)),
        )
        self.ledger.stage(event).publish()
        if with_object:
            self.store.put_new(event.object_key, b"DICM", event.sha256)
        then = time.time() - age_seconds
        os.utime(self.root / marker_key(sop), (then, then))
        return event


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "objects")


@pytest.fixture
def publish() -> RecordingPublish:
    return RecordingPublish()


def sweeper(archive: Archive, publish: RecordingPublish, batch_size: int = 100) -> Sweeper:
    return Sweeper(archive.store, archive.ledger, publish, grace_seconds=GRACE, batch_size=batch_size)


def test_old_markers_are_handed_over(archive: Archive, publish: RecordingPublish) -> None:
    old = [archive.stored(age_seconds=120) for _ in range(3)]
    assert sweeper(archive, publish).sweep_once() == 3
    assert sorted(publish.uids()) == sorted(event.sop_instance_uid for event in old)  # type: ignore[type-var]


def test_the_handed_over_payload_is_the_stored_event(archive: Archive, publish: RecordingPublish) -> None:
    event = archive.stored(age_seconds=120)
    sweeper(archive, publish).sweep_once()
    assert [InstanceStored.model_validate(payload) for payload in publish.batches[0]] == [event]


def test_markers_younger_than_the_grace_period_are_left_to_their_events(
    archive: Archive, publish: RecordingPublish
) -> None:
    archive.stored(age_seconds=1)
    assert sweeper(archive, publish).sweep_once() == 0
    assert publish.batches == []


def test_a_marker_is_not_handed_over_again_within_the_backoff(archive: Archive, publish: RecordingPublish) -> None:
    event = archive.stored(age_seconds=120)
    sweep = sweeper(archive, publish)
    assert sweep.sweep_once() == 1
    assert sweep.sweep_once() == 0
    assert publish.uids() == [event.sop_instance_uid]
    assert archive.ledger.count() == 1  # still pending: the indexer resolves it, not the sweeper


def test_a_marker_whose_object_is_missing_is_removed_not_handed_over(
    archive: Archive, publish: RecordingPublish
) -> None:
    kept = archive.stored(age_seconds=120)
    orphan = archive.stored(age_seconds=120, with_object=False)  # the store failed: never acknowledged
    assert sweeper(archive, publish).sweep_once() == 1
    assert publish.uids() == [kept.sop_instance_uid]
    assert not (archive.root / marker_key(orphan.sop_instance_uid)).exists()
    assert archive.ledger.count() == 1


def test_batches_respect_the_batch_size(archive: Archive, publish: RecordingPublish) -> None:
    for _ in range(5):
        archive.stored(age_seconds=120)
    assert sweeper(archive, publish, batch_size=2).sweep_once() == 5
    assert sorted(len(batch) for batch in publish.batches) == [1, 2, 2]


def test_a_resolved_marker_is_not_handed_over(archive: Archive, publish: RecordingPublish) -> None:
    event = archive.stored(age_seconds=120)
    archive.ledger.resolve(event.sop_instance_uid)
    assert sweeper(archive, publish).sweep_once() == 0
