"""Indexing is idempotent, audits conflicts, and sends what it cannot index to the dead-letter list."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from services.indexer.extract import KNOWN_HEAD_BYTES
from services.indexer.indexing import index_events
from shared.db.models import AuditEvent, DeadLetter, Instance, Patient
from shared.events import InstanceStored, Reception, utc_now
from shared.runtime import Runtime
from shared.dicom.part10 import encode_part10
from shared.storage import direct_io
from shared.storage.layout import instance_key
from tests.archive import ingest, open_archive
from tests.factory import encode_dataset, make_image
from tests.stamps import require_stamps


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    archive = open_archive(tmp_path)
    yield archive
    archive.close()


def count(runtime: Runtime, model: object) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def stored_event(runtime: Runtime, key: str, data: bytes, sop_uid: str) -> InstanceStored:
    sha256 = hashlib.sha256(data).hexdigest()
    stamp = runtime.store.put_new(key, data, sha256).stamp
    event = InstanceStored(
        sop_instance_uid=sop_uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4", transfer_syntax="1.2.840.10008.1.2.1", object_key=key, size=len(data),
        sha256=sha256, reception=Reception(remote_aet="M", called_aet="PACS", remote_ip="127.0.0.1",
                                           received_at=utc_now()), object_stamp=stamp)
    runtime.ledger.stage(event).publish()
    return event


def test_indexing_the_same_instances_twice_adds_nothing(runtime: Runtime) -> None:
    study = generate_uid()
    datasets = [make_image(study_uid=study, instance_number=n) for n in range(5)]
    ingest(runtime, datasets)
    ingest(runtime, datasets)
    assert count(runtime, Instance) == 5 and count(runtime, Patient) == 1


def test_an_object_that_cannot_be_parsed_goes_to_the_dead_letter_list_and_leaves_the_queue(runtime: Runtime) -> None:
    event = stored_event(runtime, "1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"\x00" * 128 + b"DICM" + b"garbage" * 10,
                         "1.2.3.4.5")
    assert runtime.ledger.count() == 1

    result = index_events(runtime, [event])

    assert (result.indexed, result.dead_lettered) == (0, 1)
    assert count(runtime, DeadLetter) == 1 and count(runtime, Instance) == 0
    assert runtime.ledger.count() == 0


def test_a_good_instance_beside_a_bad_one_is_still_indexed(runtime: Runtime) -> None:
    bad = stored_event(runtime, "1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"not dicom at all", "1.2.3.4.6")
    ingest(runtime, [make_image()])
    result = index_events(runtime, [bad])
    assert result.dead_lettered == 1
    assert count(runtime, Instance) == 1


def test_a_study_arriving_under_another_patient_id_is_kept_apart_and_audited(runtime: Runtime) -> None:
    study = generate_uid()
    ingest(runtime, [make_image(study_uid=study, patient_id="FIRST")])
    ingest(runtime, [make_image(study_uid=study, patient_id="SECOND")])

    with runtime.sessions() as session:
        patients = sorted(session.scalars(select(Patient.patient_id).join(
            Instance, Instance.patient_fk == Patient.pk)))
        actions = list(session.scalars(select(AuditEvent.action)))
    assert patients == ["FIRST", "SECOND"]  # each instance keeps its own patient
    assert actions == ["patient_conflict"]


def indexed_sha256(runtime: Runtime, sop_uid: str) -> str:
    with runtime.sessions() as session:
        return str(session.scalar(select(Instance.sha256).where(Instance.sop_instance_uid == sop_uid)))


def image_part10(instance_number: int = 1, uids: tuple[str, str, str] | None = None) -> tuple[str, str, bytes]:
    """(SOP Instance UID, key, Part-10 bytes) of an image: a new one, or another version of ``uids`` (study,
    series, SOP instance)."""
    study_uid, series_uid, sop_uid = uids or (generate_uid(), generate_uid(), generate_uid())
    dataset = make_image(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, instance_number=instance_number)
    part10 = encode_part10(encode_dataset(dataset, ExplicitVRLittleEndian), dataset.SOPClassUID, sop_uid,
                           ExplicitVRLittleEndian)
    return sop_uid, instance_key(study_uid, series_uid, sop_uid), part10


@pytest.fixture
def stamped(runtime: Runtime, tmp_path: Path) -> Runtime:
    require_stamps(tmp_path)
    return runtime


def test_the_object_an_event_was_stamped_for_is_not_hashed_again(stamped: Runtime) -> None:
    sop_uid, key, part10 = image_part10()
    event = stored_event(stamped, key, part10, sop_uid)
    assert event.object_stamp is not None
    told = event.model_copy(update={"sha256": "0" * 64})  # what only the event says, never the bytes
    assert index_events(stamped, [told]).indexed == 1
    assert indexed_sha256(stamped, sop_uid) == "0" * 64


def test_a_large_stamped_object_is_read_around_the_page_cache_as_the_store_wrote_it(
        stamped: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[int] = []
    real = direct_io.read_head

    def noting(fd: int, length: int):  # type: ignore[no-untyped-def]
        heads.append(length)
        return real(fd, length)

    monkeypatch.setattr(direct_io, "read_head", noting)
    study_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
    dataset = make_image(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, rows=256, columns=256)
    part10 = encode_part10(encode_dataset(dataset, ExplicitVRLittleEndian), dataset.SOPClassUID, sop_uid,
                           ExplicitVRLittleEndian)
    assert len(part10) > direct_io.DIRECT_MIN_BYTES
    event = stored_event(stamped, instance_key(study_uid, series_uid, sop_uid), part10, sop_uid)
    assert index_events(stamped, [event]).indexed == 1
    assert heads == [KNOWN_HEAD_BYTES]
    assert indexed_sha256(stamped, sop_uid) == hashlib.sha256(part10).hexdigest()


def test_an_object_deleted_and_sent_again_since_its_event_is_hashed(stamped: Runtime) -> None:
    uids = (generate_uid(), generate_uid(), generate_uid())
    sop_uid, key, part10 = image_part10(1, uids)
    stale = stored_event(stamped, key, part10, sop_uid)
    stamped.store.delete(key)
    _, _, other = image_part10(2, uids)  # the same SOP Instance UID, other content, under the same key
    stamped.store.put_new(key, other, hashlib.sha256(other).hexdigest())
    assert index_events(stamped, [stale]).indexed == 1
    assert indexed_sha256(stamped, sop_uid) == hashlib.sha256(other).hexdigest()


def test_an_event_without_a_stamp_is_hashed(runtime: Runtime) -> None:
    sop_uid, key, part10 = image_part10()
    event = stored_event(runtime, key, part10, sop_uid).model_copy(update={"object_stamp": None, "sha256": "0" * 64})
    assert index_events(runtime, [event]).indexed == 1
    assert indexed_sha256(runtime, sop_uid) == hashlib.sha256(part10).hexdigest()
