"""A batch of index records is written in a few statements with the semantics of one record at a time: idempotent,
first values kept, patient conflicts audited, last_update moved only where instances arrived; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import func, select

from services.indexer.extract import IndexRecord
from services.indexer.indexing import index_events
from services.indexer.upsert import LOOKUP_CHUNK, Indexed, upsert_instances
from shared.db.models import AuditEvent, DeadLetter, Instance, Patient, Series, Study
from shared.events import InstanceStored, Reception
from shared.runtime import Runtime
from shared.dicom.part10 import encode_part10
from tests.archive import open_archive
from tests.factory import encode_dataset, make_image

EARLIER = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATER = EARLIER + timedelta(hours=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    archive = open_archive(tmp_path, url)
    yield archive
    archive.close()


def indexed(sop: str, study: str = "1.2.3", series: str = "1.2.3.4", patient_id: str = "PID",
            remote_aet: str = "MODALITY", **columns: object) -> Indexed:
    record = IndexRecord(
        patient_key=patient_id, patient_id=patient_id, patient_name="Doe^Jane", patient_name_folded="doe^jane",
        patient_name_search="doe^jane", patient_birth_date="19700101", patient_sex="F", study_instance_uid=study,
        study_date="20260101", study_time="120000", accession_number="ACC", study_id="1",
        study_description="first", referring_physician_name="", series_instance_uid=series, modality="CT",
        series_number=1, series_description="first", body_part_examined="", sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", instance_number=1, transfer_syntax="1.2.840.10008.1.2.1",
        specific_character_set="", size=10, sha256=hashlib.sha256(sop.encode()).hexdigest(),
        attributes={"00080018": {"vr": "UI", "Value": [sop]}},
        attributes_json=json.dumps({"00080018": {"vr": "UI", "Value": [sop]}}))
    record = replace(record, **columns)  # type: ignore[arg-type]
    event = InstanceStored(
        sop_instance_uid=sop, sop_class_uid=record.sop_class_uid, study_instance_uid=study,
        series_instance_uid=series, transfer_syntax=record.transfer_syntax, object_key=f"{study}/{series}/{sop}.dcm",
        size=record.size, sha256=record.sha256,
        reception=Reception(remote_aet=remote_aet, called_aet="PACS", remote_ip="127.0.0.1", received_at=EARLIER))
    return event, record


def write(runtime: Runtime, batch: list[Indexed], now: datetime = EARLIER) -> list[str]:
    with runtime.sessions.begin() as session:
        return [record.sop_instance_uid for _, record in upsert_instances(session, batch, now)]


def count(runtime: Runtime, model: object) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def test_a_replayed_batch_changes_nothing(runtime: Runtime) -> None:
    batch = [indexed(f"1.2.3.4.{n}") for n in range(5)]
    assert write(runtime, batch) == [f"1.2.3.4.{n}" for n in range(5)]
    assert write(runtime, batch, LATER) == []
    assert [count(runtime, model) for model in (Patient, Study, Series, Instance)] == [1, 1, 1, 5]
    with runtime.sessions() as session:
        assert session.scalar(select(Series.last_update)) == EARLIER  # a replay touches nothing
        row = session.execute(select(Instance).where(Instance.sop_instance_uid == "1.2.3.4.0")).scalar_one()
    event, record = batch[0]
    assert (row.received_at, row.indexed_at, row.remote_aet, row.object_key, row.size, row.sha256) == (
        EARLIER, EARLIER, "MODALITY", event.object_key, record.size, record.sha256)
    assert row.attributes == record.attributes


def test_a_sop_instance_uid_twice_in_a_batch_is_indexed_once(runtime: Runtime) -> None:
    assert write(runtime, [indexed("1.2.3.4.1"), indexed("1.2.3.4.1", instance_number=9)]) == ["1.2.3.4.1"]
    with runtime.sessions() as session:
        assert session.scalars(select(Instance.instance_number)).all() == [1]


def test_the_first_values_of_a_patient_study_and_series_are_kept(runtime: Runtime) -> None:
    write(runtime, [indexed("1.2.3.4.1"), indexed("1.2.3.4.2", patient_name="Other^Name", study_description="second",
                                                  series_description="second")])
    write(runtime, [indexed("1.2.3.4.3", study_description="third", series_description="third")], LATER)
    with runtime.sessions() as session:
        assert session.scalars(select(Patient.patient_name)).all() == ["Doe^Jane"]
        assert session.scalars(select(Study.study_description)).all() == ["first"]
        assert session.scalars(select(Series.series_description)).all() == ["first"]


def test_a_study_arriving_under_two_patient_ids_in_one_batch_is_audited(runtime: Runtime) -> None:
    write(runtime, [indexed("1.2.3.4.1", patient_id="FIRST"), indexed("1.2.3.4.2", patient_id="SECOND"),
                    indexed("1.2.3.4.3", patient_id="FIRST")])
    with runtime.sessions() as session:
        own = dict(session.execute(select(Instance.sop_instance_uid, Patient.patient_id)
                                   .join(Patient, Instance.patient_fk == Patient.pk)).all())
        audited = session.execute(select(AuditEvent.action, AuditEvent.details)).all()
    assert own == {"1.2.3.4.1": "FIRST", "1.2.3.4.2": "SECOND", "1.2.3.4.3": "FIRST"}
    assert [(action, details["sop_instance_uid"]) for action, details in audited] == [
        ("patient_conflict", "1.2.3.4.2")]
    write(runtime, [indexed("1.2.3.4.2", patient_id="SECOND")], LATER)  # a replay audits nothing more
    assert count(runtime, AuditEvent) == 1


def test_last_update_moves_only_where_instances_arrived(runtime: Runtime) -> None:
    write(runtime, [indexed("1.2.3.4.1"), indexed("1.2.5.6.1", study="1.2.5", series="1.2.5.6")])
    write(runtime, [indexed("1.2.3.4.2"), indexed("1.2.5.6.1", study="1.2.5", series="1.2.5.6")], LATER)
    with runtime.sessions() as session:
        studies = dict(session.execute(select(Study.study_instance_uid, Study.last_update)).all())
        series = dict(session.execute(select(Series.series_instance_uid, Series.last_update)).all())
    assert studies == {"1.2.3": LATER, "1.2.5": EARLIER}
    assert series == {"1.2.3.4": LATER, "1.2.5.6": EARLIER}


def test_a_batch_larger_than_one_lookup(runtime: Runtime) -> None:
    batch = [indexed(f"1.2.9.{n}.1", study=f"1.2.9.{n // 2}", series=f"1.2.9.{n}", patient_id=f"P{n // 4}")
             for n in range(LOOKUP_CHUNK + 20)]
    assert len(write(runtime, batch)) == LOOKUP_CHUNK + 20
    assert len(write(runtime, [*batch, indexed("1.2.9.99999.1", series="1.2.9.0", study="1.2.9.0", patient_id="P0")], LATER)) == 1
    assert count(runtime, Series) == LOOKUP_CHUNK + 20
    assert count(runtime, Patient) == (LOOKUP_CHUNK + 20 + 3) // 4


def stored(runtime: Runtime, remote_aet: str) -> InstanceStored:
    """A real object in the store, with the event the SCP hands over for it."""
    dataset = make_image()
    part10 = encode_part10(encode_dataset(dataset), dataset.SOPClassUID, dataset.SOPInstanceUID,
                           ExplicitVRLittleEndian)
    sha256 = hashlib.sha256(part10).hexdigest()
    key = f"{dataset.StudyInstanceUID}/{dataset.SeriesInstanceUID}/{dataset.SOPInstanceUID}.dcm"
    runtime.store.put_new(key, part10, sha256)
    return InstanceStored(
        sop_instance_uid=dataset.SOPInstanceUID, sop_class_uid=dataset.SOPClassUID,
        study_instance_uid=dataset.StudyInstanceUID, series_instance_uid=dataset.SeriesInstanceUID,
        transfer_syntax=ExplicitVRLittleEndian, object_key=key, size=len(part10), sha256=sha256,
        reception=Reception(remote_aet=remote_aet, called_aet="PACS", remote_ip="127.0.0.1", received_at=EARLIER))


@pytest.fixture
def postgres_runtime(postgres_url: str, tmp_path: Path) -> Iterator[Runtime]:
    archive = open_archive(tmp_path, postgres_url)
    yield archive
    archive.close()


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_indexed(postgres_runtime: Runtime) -> None:
    """After a permanent database error (PostgreSQL refuses a value longer than its column; SQLite would store it)
    the batch is written one instance at a time (_write_one_by_one)."""
    runtime = postgres_runtime
    events = [stored(runtime, "MODALITY"), stored(runtime, "X" * 17), stored(runtime, "MODALITY")]  # AE: 16 at most
    result = index_events(runtime, events)
    assert (result.indexed, result.dead_lettered) == (2, 1)
    with runtime.sessions() as session:
        assert session.scalars(select(DeadLetter.sop_instance_uid)).all() == [events[1].sop_instance_uid]
        assert sorted(session.scalars(select(Instance.sop_instance_uid))) == sorted(
            event.sop_instance_uid for event in (events[0], events[2]))


def test_two_workers_writing_the_same_batch_announce_each_instance_once(postgres_runtime: Runtime) -> None:
    batch = [indexed(f"1.2.3.4.{n}", series=f"1.2.3.{n % 3}") for n in range(30)]
    with ThreadPoolExecutor(2) as workers:
        written = list(workers.map(lambda _: write(postgres_runtime, batch), range(2)))
    assert sorted(written[0] + written[1]) == sorted(record.sop_instance_uid for _, record in batch)
    assert [count(postgres_runtime, model) for model in (Patient, Study, Series, Instance)] == [1, 1, 3, 30]


def test_a_replayed_task_reports_its_instances_already_indexed(runtime: Runtime) -> None:
    events = [stored(runtime, "MODALITY") for _ in range(3)]
    first = index_events(runtime, events)
    for event in events:
        runtime.ledger.stage(event).publish()  # the sweeper hands over what a lost acknowledgement left pending
    again = index_events(runtime, [*events, events[0]])
    assert (first.indexed, first.already_indexed) == (3, 0)
    assert (again.indexed, again.already_indexed, again.dead_lettered) == (0, 4, 0)
    assert runtime.ledger.count() == 0
