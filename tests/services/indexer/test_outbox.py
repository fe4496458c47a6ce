"""Indexing writes the events of newly indexed instances in its own transaction: one instance_stored delivery per
webhook per batch, forwards of matching instance_stored rules, and nothing again when a batch is replayed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from sqlalchemy import select

from shared.db.routing_models import Forward, RoutingRule, Webhook, WebhookDelivery
from shared.events import utc_now
from shared.runtime import Runtime
from tests.archive import ingest, open_archive
from tests.factory import make_image


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    archive = open_archive(tmp_path)
    now = utc_now()
    with archive.sessions.begin() as session:
        session.add_all([
            Webhook(id="a" * 32, name="all", url="http://127.0.0.1:9/", events=["instance_stored"], enabled=True,
                    include_patient=False, created_at=now, updated_at=now),
            Webhook(id="b" * 32, name="off", url="http://127.0.0.1:9/", events=["instance_stored"], enabled=False,
                    include_patient=False, created_at=now, updated_at=now),
            Webhook(id="c" * 32, name="stable-only", url="http://127.0.0.1:9/", events=["study_stable"],
                    enabled=True, include_patient=False, created_at=now, updated_at=now),
            RoutingRule(id="r" * 32, name="mr", enabled=True, trigger="instance_stored", destination="d",
                        conditions={"modality": ["MR"], "calling_aet": ["MR_ROOM"]}, created_at=now, updated_at=now),
        ])
    yield archive
    archive.close()


def test_a_batch_is_announced_once_and_a_replay_announces_nothing(runtime: Runtime) -> None:
    study = generate_uid()
    ct = [make_image(CTImageStorage, study_uid=study, instance_number=n) for n in range(2)]
    mr = [make_image(MRImageStorage, study_uid=study, instance_number=n) for n in range(3)]
    for dataset in mr:
        dataset.Modality = "MR"
    ingest(runtime, ct + mr, remote_aet="MR_ROOM")
    ingest(runtime, ct + mr, remote_aet="MR_ROOM")  # replayed: already indexed
    with runtime.sessions() as session:
        deliveries = list(session.scalars(select(WebhookDelivery)))
        forwards = list(session.scalars(select(Forward)))
    assert [(d.webhook_id, d.event, d.state) for d in deliveries] == [("a" * 32, "instance_stored", "pending")]
    listed = {item["sop_instance_uid"]: item for item in deliveries[0].payload["instances"]}
    assert set(listed) == {ds.SOPInstanceUID for ds in ct + mr}
    assert all("patient_id" not in item and item["remote_aet"] == "MR_ROOM" for item in listed.values())
    assert [(f.study_instance_uid, sorted(f.sop_instance_uids or [])) for f in forwards] == [
        (study, sorted(ds.SOPInstanceUID for ds in mr))]


def test_a_rule_whose_conditions_do_not_hold_writes_nothing(runtime: Runtime) -> None:
    datasets = [make_image(MRImageStorage, instance_number=1)]
    datasets[0].Modality = "MR"
    ingest(runtime, datasets, remote_aet="OTHER_AE")  # the rule wants MR_ROOM
    with runtime.sessions() as session:
        assert list(session.scalars(select(Forward))) == []
