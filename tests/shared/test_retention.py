"""Retention with a fake clock, on SQLite and PostgreSQL: the dry run, deletion of what it lists (index rows,
objects, claims, audit), protected studies kept, the study-date basis, one runner at a time (advisory lock), and
the indexer's lifecycle pass finishing a deletion that a crash interrupted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from services.indexer.indexing import index_events
from services.indexer.lifecycle import Lifecycle
from shared.db.models import AuditEvent, Instance, Study
from shared.db.storage_models import PendingDeletion, ProtectedStudy
from shared.deletion import delete_rows
from shared.events import InstanceStored, Reception, utc_now
from shared.ingest import Ingest
from shared.ingest_identify import identify
from shared.node_config import NodeConfig, store_settings
from shared.retention import ADVISORY_LOCK_KEY, preview, run_retention
from shared.runtime import Runtime
from tests.factory import encode_dataset, make_image


def store_study(runtime: Runtime, count: int = 2, study_date: str = "20261126") -> str:
    """Through the real ingest core (claims, markers) and indexer."""
    study, series = generate_uid(), generate_uid()
    events: list[InstanceStored] = []
    ingest = Ingest(runtime.store, runtime.ledger,
                    lambda task, payload: events.append(InstanceStored.model_validate(payload)))
    for number in range(count):
        dataset = make_image(study_uid=study, series_uid=series, instance_number=number + 1)
        dataset.StudyDate = study_date
        data = encode_dataset(dataset, ExplicitVRLittleEndian)
        ingest.store_instance(identify(data, ExplicitVRLittleEndian), ExplicitVRLittleEndian, data,
                              Reception(remote_aet="MOD", called_aet="PACS", remote_ip="127.0.0.1",
                                        received_at=utc_now()))
    assert index_events(runtime, events).indexed == count
    return study


def held(runtime: Runtime) -> dict[str, Any]:
    with runtime.sessions() as session:
        studies = set(session.scalars(select(Study.study_instance_uid)))
        instances = session.scalar(select(func.count(Instance.pk)))
        pending = session.scalar(select(func.count(PendingDeletion.pk)))
    objects = [info.key for info in runtime.store.list("") if not info.key.startswith(".")]
    claims = list(runtime.store.list(".claims/"))
    return {"studies": studies, "instances": instances, "objects": len(objects), "claims": len(claims),
            "pending_deletions": pending}


def protect(runtime: Runtime, study: str) -> None:
    with runtime.sessions.begin() as session:
        session.add(ProtectedStudy(study_instance_uid=study, protected_at=utc_now(), protected_by="test"))


def test_retention_by_received_date_with_a_fake_clock(runtime: Runtime) -> None:
    old, kept = store_study(runtime), store_study(runtime, 1)
    protect(runtime, kept)
    config = NodeConfig(retention_days=30)
    today = utc_now()
    assert preview(runtime.sessions, config, today + timedelta(days=29)).studies == []
    report = preview(runtime.sessions, config, today + timedelta(days=31))  # the dry run
    assert [item.study_instance_uid for item in report.studies] == [old]
    assert report.as_json()["instances"] == 2 and report.as_json()["bytes"] > 0
    assert held(runtime)["instances"] == 3  # nothing deleted by the dry run

    done = run_retention(runtime.engine, runtime.sessions, runtime.store, config, today + timedelta(days=31))
    assert done.deleted == 1
    assert held(runtime) == {"studies": {kept}, "instances": 1, "objects": 1, "claims": 1, "pending_deletions": 0}
    with runtime.sessions() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "retention_deleted")).all()
    assert event.details["study_instance_uid"] == old and event.details["instances"] == 2
    assert event.details["basis"] == "received" and event.details["days"] == 30
    assert NodeConfig().retention_days is None  # off by default
    assert preview(runtime.sessions, NodeConfig(), today + timedelta(days=10_000)).studies == []


def test_retention_by_study_date_keeps_studies_still_receiving(runtime: Runtime) -> None:
    ancient, recent, undated = (store_study(runtime, 1, "20000101"), store_study(runtime, 1, "20261126"),
                                store_study(runtime, 1, ""))
    config = NodeConfig(retention_days=365, retention_basis="study_date")
    today = utc_now()
    assert preview(runtime.sessions, config, today).studies == []  # received within the last day: kept
    later = today + timedelta(days=2)
    assert [item.study_instance_uid for item in preview(runtime.sessions, config, later).studies] == [ancient]
    assert run_retention(runtime.engine, runtime.sessions, runtime.store, config, later).deleted == 1
    assert held(runtime)["studies"] == {recent, undated}


def test_only_one_runner_at_a_time_on_postgresql(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        assert run_retention(runtime.engine, runtime.sessions, runtime.store, NodeConfig(retention_days=1),
                             utc_now()).skipped is None  # SQLite: one indexer, no lock needed
        return
    study = store_study(runtime, 1)
    config, later = NodeConfig(retention_days=1), utc_now() + timedelta(days=3)
    url = runtime.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as other_indexer:
        other_indexer.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        report = run_retention(runtime.engine, runtime.sessions, runtime.store, config, later)
        assert report.skipped == "locked" and report.deleted == 0
        assert held(runtime)["studies"] == {study}
        other_indexer.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    assert run_retention(runtime.engine, runtime.sessions, runtime.store, config, later).deleted == 1


def test_the_lifecycle_pass_finishes_an_interrupted_deletion_and_applies_retention(runtime: Runtime) -> None:
    interrupted, old, protected = store_study(runtime), store_study(runtime), store_study(runtime)
    protect(runtime, protected)
    with runtime.sessions.begin() as session:  # step 1 committed, then the process died before step 2
        delete_rows(session, "study", interrupted, utc_now(), {"action": "study_deleted"})
    state = held(runtime)
    assert state["instances"] == 4 and state["objects"] == 6 and state["pending_deletions"] == 2
    # No index row names a missing object at any point: the index lost its rows before the store its objects.
    with runtime.sessions() as session:
        keys = list(session.scalars(select(Instance.object_key)))
    assert all(runtime.store.stat(key) is not None for key in keys)

    lifecycle = Lifecycle(runtime, clock=lambda: utc_now() + timedelta(days=8))
    assert lifecycle.run_once() is None  # retention off: only the interrupted deletion is finished
    assert held(runtime) == {"studies": {old, protected}, "instances": 4, "objects": 4, "claims": 4,
                             "pending_deletions": 0}
    with runtime.sessions.begin() as session:
        store_settings(session, {"retention_days": 7}, utc_now())
    report = lifecycle.run_once()
    assert report is not None and report.deleted == 1
    assert held(runtime)["studies"] == {protected}


