"""Duplicate detection when the key is not a function of the SOP Instance UID alone (shared.storage.claims through
shared.ingest): another day under the date layout, another PatientID, timestamp names, objects stored before
claims existed; on a local folder and on S3 (moto). No index database is involved: the object store decides."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from shared.events import Reception
from shared.ingest import Ingest, IngestOutcome, StoragePolicy
from shared.ingest_identify import identify
from shared.pending import PendingLedger
from shared.storage import ObjectStore
from shared.storage.claims import ClaimRegistry, InstanceBeingDeleted, claim_key
from shared.storage.filesystem import FilesystemObjectStore
from shared.storage.layout import legacy_instance_key, patient_component
from shared.storage.s3 import S3ObjectStore
from tests.conftest import S3Server
from tests.factory import encode_dataset, make_image

DAY_ONE = datetime(2026, 11, 26, 23, 59, 59, tzinfo=timezone.utc)
DAY_TWO = DAY_ONE + timedelta(seconds=2)


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield FilesystemObjectStore(tmp_path / "objects")
        return
    server = S3Server()
    server.start()
    try:
        yield S3ObjectStore(f"pacs-{uuid.uuid4().hex[:12]}", server.endpoint, "testing", "testing", "us-east-1", 4.0)
    finally:
        server.stop()


class Node:
    """The ingest core with a policy that the test changes, and the events it hands over."""

    def __init__(self, store: ObjectStore) -> None:
        self.policy = StoragePolicy("date", "sop_uid")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ingest = Ingest(store, PendingLedger(store), lambda task, event: self.events.append((task, event)),
                             lambda: self.policy)

    def send(self, dataset: Any, at: datetime) -> tuple[IngestOutcome, str]:
        data = encode_dataset(dataset, ExplicitVRLittleEndian)
        reception = Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1", received_at=at)
        result = self.ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data,
                                            reception)
        return result.outcome, result.object_key


def objects(store: ObjectStore) -> list[str]:
    return sorted(info.key for info in store.list("") if not info.key.startswith("."))


def test_the_date_layout_detects_a_duplicate_sent_again_the_next_day(store: ObjectStore) -> None:
    node = Node(store)
    image = make_image(patient_id="P1")
    assert node.send(image, DAY_ONE) == (IngestOutcome.STORED, f"2026/11/26/{image.SOPInstanceUID}.dcm")
    assert node.send(image, DAY_TWO) == (IngestOutcome.IDENTICAL, f"2026/11/26/{image.SOPInstanceUID}.dcm")
    image.PatientName = "Other^Content"
    assert node.send(image, DAY_TWO) == (IngestOutcome.CONFLICT, f"2026/11/26/{image.SOPInstanceUID}.dcm")
    assert objects(store) == [f"2026/11/26/{image.SOPInstanceUID}.dcm"]
    assert [task for task, _ in node.events] == ["pacs.index_instances", "pacs.record_duplicate"]


def test_another_patient_id_timestamp_names_or_a_changed_layout_keep_the_first_key(store: ObjectStore) -> None:
    node = Node(store)
    node.policy = StoragePolicy("series", "timestamp")
    image = make_image(patient_id="P1")
    outcome, first_key = node.send(image, DAY_ONE)
    assert outcome is IngestOutcome.STORED and first_key.startswith(patient_component("P1") + "/")
    assert node.send(image, DAY_TWO) == (IngestOutcome.IDENTICAL, first_key)  # a later timestamp: same key
    node.policy = StoragePolicy("patient", "instance_number")
    image.PatientID = "P2"  # other content, and another patient folder if it were new
    assert node.send(image, DAY_TWO) == (IngestOutcome.CONFLICT, first_key)
    assert objects(store) == [first_key]
    assert ClaimRegistry(store).read(image.SOPInstanceUID) == first_key


def test_an_object_stored_before_claims_existed_keeps_its_key(store: ObjectStore) -> None:
    node = Node(store)
    image = make_image()
    Node(store).send(image, DAY_ONE)  # stored, then moved to the legacy key and its claim removed: as before claims
    legacy = legacy_instance_key(image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID)
    current = ClaimRegistry(store).read(image.SOPInstanceUID)
    assert current is not None
    data = store.get(current)
    store.put_new(legacy, data, hashlib.sha256(data).hexdigest())
    store.delete(current)
    store.delete(claim_key(image.SOPInstanceUID))
    assert node.send(image, DAY_TWO) == (IngestOutcome.IDENTICAL, legacy)
    assert objects(store) == [legacy]


def test_a_new_instance_after_its_claim_outlived_its_object_is_stored_under_the_claimed_key(
        store: ObjectStore) -> None:
    node = Node(store)
    image = make_image()
    _, key = node.send(image, DAY_ONE)
    store.delete(key)  # a crash between claim and object, or a deletion that removed the object only
    assert node.send(image, DAY_TWO) == (IngestOutcome.STORED, key)
    assert store.stat(key) is not None


def test_two_instances_never_share_a_key_whatever_the_layout(store: ObjectStore) -> None:
    node = Node(store)
    keys = set()
    for layout in ("flat", "patient", "study", "series", "date"):
        for naming in ("sop_uid", "instance_number", "timestamp", "sequence"):
            node.policy = StoragePolicy(layout, naming)
            for _ in range(2):  # same patient, study, instance number and reception time
                outcome, key = node.send(make_image(patient_id="../P 1", study_uid="1.2.3", series_uid="1.2.3.4",
                                                    instance_number=1), DAY_ONE)
                assert outcome is IngestOutcome.STORED
                keys.add(key)
    assert len(keys) == 40 and len(objects(store)) == 40
    assert not any(".." in key.split("/") or " " in key for key in keys)


def test_a_send_after_its_deletion_was_decided_is_refused_until_the_object_is_gone(store: ObjectStore) -> None:
    """The race it closes: a re-send answered Success on the old object just before the deletion removes it."""
    node, claims = Node(store), ClaimRegistry(store)
    image = make_image()
    _, key = node.send(image, DAY_ONE)
    claims.mark_deleting(image.SOPInstanceUID, key)  # shared.deletion does this before its transaction commits
    with pytest.raises(InstanceBeingDeleted):
        node.send(image, DAY_TWO)  # identical: the object is still there, but about to go
    image.PatientName = "Other^Content"
    with pytest.raises(InstanceBeingDeleted):
        node.send(image, DAY_TWO)
    assert [entry.sop_instance_uid for entry in claims.deletion_entries()] == [image.SOPInstanceUID]

    store.delete(key)
    claims.release(image.SOPInstanceUID)
    assert claims.deletion_entries() == []
    assert node.send(image, DAY_TWO) == (IngestOutcome.STORED, f"2026/11/27/{image.SOPInstanceUID}.dcm")


def test_a_deletion_that_was_not_decided_gives_the_claim_back(store: ObjectStore) -> None:
    node, claims = Node(store), ClaimRegistry(store)
    image = make_image()
    _, key = node.send(image, DAY_ONE)
    claims.mark_deleting(image.SOPInstanceUID, key)
    claims.unmark_deleting(image.SOPInstanceUID, key)
    assert node.send(image, DAY_TWO) == (IngestOutcome.IDENTICAL, key)
    assert claims.read(image.SOPInstanceUID) == key and claims.deletion_entries() == []


def test_an_empty_claim_left_by_a_crash_is_taken_over_by_the_next_send(tmp_path: Path) -> None:
    # The claim's name reached the disk, its content did not: the send that wrote it was never acknowledged.
    store = FilesystemObjectStore(tmp_path / "objects")
    node = Node(store)
    image = make_image(patient_id="P1")
    torn = tmp_path / "objects" / claim_key(image.SOPInstanceUID)
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"")
    assert ClaimRegistry(store).read(image.SOPInstanceUID) is None
    key = f"2026/11/26/{image.SOPInstanceUID}.dcm"
    assert node.send(image, DAY_ONE) == (IngestOutcome.STORED, key)
    assert ClaimRegistry(store).read(image.SOPInstanceUID) == key
    assert node.send(image, DAY_TWO) == (IngestOutcome.IDENTICAL, key)


def test_the_claims_of_one_folder_name_one_file_in_a_local_folder(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    node = Node(store)
    node.policy = StoragePolicy("series", "sop_uid")
    images = [make_image(patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.4") for _ in range(3)]
    keys = [node.send(image, DAY_ONE)[1] for image in images]
    claims = [tmp_path / "objects" / claim_key(image.SOPInstanceUID) for image in images]
    assert len({path.stat().st_ino for path in claims}) == 1 and claims[0].stat().st_nlink == 4  # and the anchor
    assert claims[0].read_bytes() == f"{patient_component('P1')}/1.2.3/1.2.3.4/*.dcm".encode()
    assert [ClaimRegistry(store).read(image.SOPInstanceUID) for image in images] == keys
    assert [node.send(image, DAY_TWO)[0] for image in images] == [IngestOutcome.IDENTICAL] * 3


def test_a_claim_names_the_key_of_its_own_instance_from_its_folder(store: ObjectStore) -> None:
    node = Node(store)
    image = make_image(patient_id="P1")
    store.put_hint(claim_key(image.SOPInstanceUID), b"2026/11/20/*.dcm")  # a claim another day's send left
    assert node.send(image, DAY_ONE) == (IngestOutcome.STORED, f"2026/11/20/{image.SOPInstanceUID}.dcm")
    store.put_hint(claim_key(image.SOPInstanceUID), b"2026/11/20/../*.dcm")
    assert ClaimRegistry(store).read(image.SOPInstanceUID) is None  # names no key of the scheme: unreadable
