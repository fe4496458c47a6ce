"""Webhooks against `pacs serve`: a local HTTP server in the test process receives instance_stored and study_stable
events (signed), failures are retried with backoff, pending deliveries survive a restart, and no patient data is
sent unless the webhook opts in."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from tests.event_peers import Receiver
from tests.factory import SampleFile, make_image, save
from tests.node import PACS, REPO, Node, wait_until
from tests.peers import push_files

SECRET = "a-shared-secret-of-some-length"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def configure(node: Node, **values: Any) -> None:
    response = httpx.patch(f"{node.api}/api/config", json=values, timeout=10)
    assert response.status_code == 200, response.text


def put_webhook(node: Node, name: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{node.api}/api/webhooks/{name}", json=body, timeout=10)


def push_study(node: Node, tmp_path: Path, count: int, study: str | None = None,
               patient_id: str = "P-HOOK-4711") -> tuple[str, list[str]]:
    study, series = study or generate_uid(), generate_uid()
    datasets = [make_image(CTImageStorage, study, series, patient_id=patient_id, instance_number=n + 1)
                for n in range(count)]
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_files(node.dicom_port, files, calling_aet="CT_ROOM3")
    return study, [ds.SOPInstanceUID for ds in datasets]


def deliveries(node: Node, name: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{node.api}/api/webhooks/{name}/deliveries", timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def test_signed_events_for_stored_instances_and_a_stable_study_without_patient_data(
    embedded_node: Node, receiver: Receiver, tmp_path: Path
) -> None:
    configure(embedded_node, study_stable_seconds=2)
    created = put_webhook(embedded_node, "ris", {"url": receiver.url, "secret": SECRET})
    assert created.status_code == 201, created.text
    assert created.json()["secret_set"] is True and "secret" not in created.json()
    study, uids = push_study(embedded_node, tmp_path, 3)

    def stored_uids() -> set[str]:
        return {item["sop_instance_uid"] for event in receiver.events("instance_stored")
                for item in event["instances"]}

    wait_until(lambda: stored_uids() == set(uids), 60, "instance_stored events for the three instances")
    stable = wait_until(lambda: receiver.events("study_stable"), 60, "the study_stable event")
    assert stable[0]["study"]["study_instance_uid"] == study
    assert stable[0]["study"]["instances"] == 3 and stable[0]["study"]["modalities"] == ["CT"]
    for event in receiver.events("instance_stored"):
        item = event["instances"][0]
        assert item["remote_aet"] == "CT_ROOM3" and item["study_instance_uid"] == study
    for headers, body in receiver.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-pacs-signature"] == expected
        assert b"P-HOOK-4711" not in body and b"patient" not in body  # no patient data without the opt-in
        assert headers["content-type"] == "application/json"
    log = deliveries(embedded_node, "ris")
    assert log and all(entry["state"] == "delivered" and entry["last_status"] == 200 for entry in log)

    # New instances make the study unstable; once quiet again it is announced again (and only then).
    push_study(embedded_node, tmp_path, 1, study=study)
    wait_until(lambda: len(receiver.events("study_stable")) == 2, 60, "a second study_stable event")
    second = receiver.events("study_stable")[1]["study"]
    assert second["instances"] == 4 and second["study_instance_uid"] == study
    assert len({event["event_id"] for event in receiver.events("study_stable")}) == 2


def test_failed_deliveries_are_retried_and_patient_data_only_with_the_opt_in(
    embedded_node: Node, tmp_path: Path
) -> None:
    flaky = Receiver(failures=2)
    try:
        configure(embedded_node, study_stable_seconds=3600, webhook_retry_seconds=1, webhook_max_attempts=5)
        assert put_webhook(embedded_node, "flaky", {"url": flaky.url, "events": ["instance_stored"],
                                                    "include_patient": True}).status_code == 201
        _, uids = push_study(embedded_node, tmp_path, 1)
        events = wait_until(lambda: flaky.events("instance_stored"), 60, "the delivery after two failures")
        assert events[0]["instances"][0]["sop_instance_uid"] == uids[0]
        assert events[0]["instances"][0]["patient_id"] == "P-HOOK-4711"  # the admin opted in
        log = deliveries(embedded_node, "flaky")
        assert [(entry["state"], entry["attempts"]) for entry in log] == [("delivered", 3)]
    finally:
        flaky.stop()


def test_a_delivery_that_never_succeeds_is_marked_failed(embedded_node: Node, tmp_path: Path) -> None:
    dead = Receiver()
    dead.down = True
    try:
        configure(embedded_node, webhook_retry_seconds=1, webhook_max_attempts=2)
        assert put_webhook(embedded_node, "dead", {"url": dead.url, "events": ["instance_stored"]}).status_code == 201
        push_study(embedded_node, tmp_path, 1)
        log = wait_until(lambda: [e for e in deliveries(embedded_node, "dead") if e["state"] == "failed"], 60,
                         "the delivery marked failed")
        assert log[0]["attempts"] == 2 and log[0]["last_status"] == 503 and log[0]["last_error"] == "HTTP 503"
        failed = httpx.get(f"{embedded_node.api}/api/webhooks/dead/deliveries", params={"state": "failed"},
                           timeout=10).json()
        assert failed["total"] == 1
    finally:
        dead.stop()


def test_pending_deliveries_survive_a_restart(embedded_node: Node, receiver: Receiver, tmp_path: Path) -> None:
    receiver.down = True
    configure(embedded_node, webhook_retry_seconds=1, webhook_max_attempts=100)
    assert put_webhook(embedded_node, "later", {"url": receiver.url, "events": ["instance_stored"]}).status_code == 201
    _, uids = push_study(embedded_node, tmp_path, 2)
    wait_until(lambda: any(e["attempts"] >= 1 for e in deliveries(embedded_node, "later")), 60,
               "a first failed attempt")
    embedded_node.stop()
    receiver.down = False
    embedded_node.service("serve")
    embedded_node.wait_ready()
    wait_until(lambda: {i["sop_instance_uid"] for e in receiver.events("instance_stored") for i in e["instances"]}
               == set(uids), 60, "the delivery after the restart")


def test_webhook_routes_validate_and_need_the_admin_role(embedded_node: Node, receiver: Receiver) -> None:
    bad = put_webhook(embedded_node, "bad", {"url": "ftp://example.org/x", "events": ["nonsense"], "secret": "short",
                                             "colour": "red"})
    assert bad.status_code == 422
    assert {problem["key"] for problem in bad.json()["detail"]} >= {"url", "events.0", "secret", "colour"}
    assert put_webhook(embedded_node, "ok", {"url": receiver.url}).status_code == 201
    replaced = put_webhook(embedded_node, "ok", {"url": receiver.url, "events": ["study_stable"], "enabled": False})
    assert replaced.status_code == 200 and replaced.json()["events"] == ["study_stable"]
    assert [hook["name"] for hook in httpx.get(f"{embedded_node.api}/api/webhooks", timeout=10).json()] == ["ok"]
    assert httpx.get(f"{embedded_node.api}/api/webhooks/missing", timeout=10).status_code == 404
    assert httpx.get(f"{embedded_node.api}/api/webhooks/missing/deliveries", timeout=10).status_code == 404
    made = subprocess.run([*PACS, "token", "create", "reader", "--role", "viewer"], cwd=REPO, env=embedded_node.env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    viewer = {"Authorization": f"Bearer {made.stdout.strip()}"}
    assert httpx.get(f"{embedded_node.api}/api/webhooks", headers=viewer, timeout=10).status_code == 403
    assert httpx.get(f"{embedded_node.api}/api/routing/rules", headers=viewer, timeout=10).status_code == 403
    assert httpx.delete(f"{embedded_node.api}/api/webhooks/ok", headers=viewer, timeout=10).status_code == 403
