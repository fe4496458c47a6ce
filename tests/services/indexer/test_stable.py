"""Study-stable detection with a fake clock, on SQLite and on the local PostgreSQL: once per quiet period, again
after new instances, never again after a restart or an upgrade, one detector at a time on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.indexer.stable import ADVISORY_LOCK_KEY, StabilityDetector
from shared.db.engine import create_index_engine, create_session_factory
from shared.db.migrate import alembic_config, upgrade_to_head
from shared.db.models import Instance, Patient, Series, Study
from shared.db.routing_models import Forward, RoutingRule, StudyStability, Webhook, WebhookDelivery

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(database_url)
    engine = create_index_engine(database_url)
    yield create_session_factory(engine)
    engine.dispose()


def add_study(sessions: sessionmaker[Session], last_update: datetime, modality: str = "CT") -> int:
    with sessions.begin() as session:
        patient = Patient(patient_key=f"k-{last_update.timestamp()}-{modality}", patient_id="P-STABLE",
                          patient_name="Doe^Jane", created_at=T0)
        session.add(patient)
        session.flush()
        study = Study(study_instance_uid=f"1.2.3.{int(last_update.timestamp())}", patient_fk=patient.pk,
                      created_at=T0, last_update=last_update)
        session.add(study)
        session.flush()
        series = Series(series_instance_uid=f"1.2.4.{int(last_update.timestamp())}", study_fk=study.pk,
                        modality=modality, created_at=T0, last_update=last_update)
        session.add(series)
        session.flush()
        session.add(Instance(sop_instance_uid=f"1.2.5.{int(last_update.timestamp())}", sop_class_uid="1.2.840.1",
                             series_fk=series.pk, patient_fk=patient.pk, transfer_syntax="1.2.840.10008.1.2.1",
                             object_key="k.dcm", size=1, sha256="0" * 64, remote_aet="CT_ROOM3",
                             received_at=last_update, indexed_at=last_update, attributes={}))
        return int(study.pk)


def test_a_study_is_stable_once_per_quiet_period(sessions: sessionmaker[Session]) -> None:
    study = add_study(sessions, T0)
    detector = StabilityDetector(sessions)
    assert detector.run_pass(60, now=T0 + timedelta(seconds=30)) == 0  # still receiving
    assert detector.run_pass(60, now=T0 + timedelta(seconds=61)) == 1
    assert detector.run_pass(60, now=T0 + timedelta(seconds=62)) == 0  # once
    assert StabilityDetector(sessions).run_pass(60, now=T0 + timedelta(seconds=90)) == 0  # after a restart too
    with sessions.begin() as session:  # new instances arrive later
        session.execute(update(Study).where(Study.pk == study).values(last_update=T0 + timedelta(seconds=100)))
    assert detector.run_pass(60, now=T0 + timedelta(seconds=120)) == 0
    assert detector.run_pass(60, now=T0 + timedelta(seconds=161)) == 1
    with sessions() as session:
        row = session.get(StudyStability, study)
        assert row is not None and row.last_update == T0 + timedelta(seconds=100)


def test_the_event_writes_its_deliveries_and_forwards_in_the_same_pass(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.add_all([
            Webhook(id="w" * 32, name="ris", url="http://127.0.0.1:9/x", events=["study_stable"], enabled=True,
                    include_patient=False, created_at=T0, updated_at=T0),
            Webhook(id="v" * 32, name="ris-with-names", url="http://127.0.0.1:9/y", events=["study_stable"],
                    enabled=True, include_patient=True, created_at=T0, updated_at=T0),
            RoutingRule(id="r" * 32, name="mr-only", enabled=True, trigger="study_stable", destination="x",
                        conditions={"modality": ["MR"]}, created_at=T0, updated_at=T0),
            RoutingRule(id="s" * 32, name="room3", enabled=True, trigger="study_stable", destination="x",
                        conditions={"calling_aet": ["CT_ROOM3"]}, created_at=T0, updated_at=T0),
        ])
    add_study(sessions, T0, modality="CT")
    assert StabilityDetector(sessions).run_pass(60, now=T0 + timedelta(minutes=5)) == 1
    with sessions() as session:
        bodies = {row.webhook_id: row.payload for row in session.scalars(select(WebhookDelivery))}
        forwards = [(row.rule_id, row.sop_instance_uids) for row in session.scalars(select(Forward))]
    assert bodies["w" * 32]["study"]["instances"] == 1 and "patient_id" not in bodies["w" * 32]["study"]
    assert bodies["v" * 32]["study"]["patient_id"] == "P-STABLE"  # opted in
    assert bodies["w" * 32]["event"] == "study_stable" and bodies["w" * 32]["study"]["modalities"] == ["CT"]
    assert forwards == [("s" * 32, None)]  # the whole study, for the rule that matches


def test_studies_held_before_the_upgrade_are_not_announced(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "0006")
    engine = create_index_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        with sessions.begin() as session:  # the tables of 0006 only: plain SQL
            session.execute(text("INSERT INTO patients (patient_key, patient_id, patient_name, patient_name_folded, "
                                 "patient_name_search, patient_birth_date, patient_sex, created_at) VALUES "
                                 "('k', 'P', '', '', '', '', '', :t)"), {"t": T0.replace(tzinfo=None)})
            session.execute(text("INSERT INTO studies (study_instance_uid, patient_fk, study_date, study_time, "
                                 "accession_number, study_id, study_description, referring_physician_name, "
                                 "created_at, last_update) SELECT '1.2.3', pk, '', '', '', '', '', '', :t, :t "
                                 "FROM patients"), {"t": T0.replace(tzinfo=None)})
        upgrade_to_head(database_url)
        assert StabilityDetector(sessions).run_pass(60, now=T0 + timedelta(days=1)) == 0
    finally:
        engine.dispose()


def test_one_detector_at_a_time_on_postgresql(postgres_url: str) -> None:
    upgrade_to_head(postgres_url)
    engine = create_index_engine(postgres_url)
    sessions = create_session_factory(engine)
    try:
        add_study(sessions, T0)
        with sessions.begin() as other:  # another indexer is in the middle of a pass
            other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            assert StabilityDetector(sessions).run_pass(60, now=T0 + timedelta(minutes=5)) == 0
        assert StabilityDetector(sessions).run_pass(60, now=T0 + timedelta(minutes=5)) == 1
    finally:
        engine.dispose()
