"""Auto-forward rules against `pacs serve`: matching studies (when stable) or instances (when indexed) arrive at a
dcmtk storescp through the mover, as jobs visible in /api/jobs, retried while the destination is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from tests.event_peers import StoreScp
from tests.factory import SampleFile, make_image, save
from tests.node import Node, free_port, wait_until
from tests.peers import push_files


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[StoreScp]:
    receiver = StoreScp(tmp_path)
    yield receiver
    receiver.stop()


def api(node: Node, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{node.api}{path}", json=body, timeout=10)


def register(node: Node, name: str, ae_title: str, port: int) -> None:
    answer = api(node, "PUT", f"/api/modalities/{name}",
                 {"ae_title": ae_title, "host": "127.0.0.1", "port": port, "allow": ["store"]})
    assert answer.status_code in (200, 201), answer.text


def push(node: Node, tmp_path: Path, sop_class: str, count: int, calling_aet: str,
         patient_id: str) -> list[str]:
    study, series = generate_uid(), generate_uid()
    datasets = [make_image(sop_class, study, series, patient_id=patient_id, instance_number=n + 1)
                for n in range(count)]
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_files(node.dicom_port, files, calling_aet=calling_aet)
    return [ds.SOPInstanceUID for ds in datasets]


def forwards(node: Node) -> list[dict[str, Any]]:
    answer = api(node, "GET", "/api/routing/forwards")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["forwards"])


def test_a_stable_study_that_matches_is_forwarded_and_others_are_not(
    embedded_node: Node, destination: StoreScp, tmp_path: Path
) -> None:
    register(embedded_node, "dest", destination.ae_title, destination.port)
    assert api(embedded_node, "PATCH", "/api/config", {"study_stable_seconds": 2}).status_code == 200
    rule = api(embedded_node, "PUT", "/api/routing/rules/ct-to-dest", {
        "destination": "dest", "trigger": "study_stable",
        "conditions": {"calling_aet": ["CT_ROOM3"], "modality": ["CT"], "tags": {"PatientID": "P-FWD-*"}}})
    assert rule.status_code == 201, rule.text
    assert rule.json()["conditions"]["tags"] == {"00100020": "P-FWD-*"}
    other_ae = push(embedded_node, tmp_path, CTImageStorage, 2, "CT_ROOM9", "P-FWD-2")  # AE not in the rule
    other_patient = push(embedded_node, tmp_path, CTImageStorage, 1, "CT_ROOM3", "P-KEEP-3")  # tag does not match
    wanted = push(embedded_node, tmp_path, CTImageStorage, 3, "CT_ROOM3", "P-FWD-1")
    wait_until(lambda: destination.received() == set(wanted), 90, "the matching study at the destination")
    done = wait_until(lambda: [f for f in forwards(embedded_node) if f["state"] == "done"], 30, "the forward done")
    assert len(forwards(embedded_node)) == 1  # the two studies that do not match were stable earlier: no forward
    job = api(embedded_node, "GET", f"/api/jobs/{done[0]['job_id']}").json()
    assert (job["kind"], job["state"], job["completed"], job["failed"]) == ("auto-forward", "done", 3, 0)
    assert job["requested_by"] == "rule:ct-to-dest" and job["destination"]["ae_title"] == destination.ae_title
    listed = api(embedded_node, "GET", "/api/jobs").json()["jobs"]
    assert any(item["id"] == job["id"] for item in listed)
    assert not destination.received() & set(other_ae + other_patient)


def test_instances_are_forwarded_as_they_arrive_when_the_trigger_is_instance_stored(
    embedded_node: Node, destination: StoreScp, tmp_path: Path
) -> None:
    register(embedded_node, "dest", destination.ae_title, destination.port)
    assert api(embedded_node, "PATCH", "/api/config", {"study_stable_seconds": 3600}).status_code == 200
    assert api(embedded_node, "PUT", "/api/routing/rules/mr-now", {
        "destination": "dest", "trigger": "instance_stored",
        "conditions": {"modality": ["MR"]}}).status_code == 201
    ct = push(embedded_node, tmp_path, CTImageStorage, 2, "SCANNER", "P-A")
    embedded_node.wait_indexed(2)
    mr = push(embedded_node, tmp_path, MRImageStorage, 2, "SCANNER", "P-B")
    wait_until(lambda: destination.received() == set(mr), 90, "the MR instances at the destination")
    assert all(f["rule"] == "mr-now" and f["instances"] for f in forwards(embedded_node))
    assert not destination.received() & set(ct)


def test_a_forward_is_retried_until_the_destination_answers(embedded_node: Node, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    register(embedded_node, "late", "LATE", port)
    assert api(embedded_node, "PATCH", "/api/config", {"study_stable_seconds": 1, "forward_retry_seconds": 1,
                                                       "forward_max_attempts": 100}).status_code == 200
    assert api(embedded_node, "PUT", "/api/routing/rules/all", {"destination": "late"}).status_code == 201
    uids = push(embedded_node, tmp_path, CTImageStorage, 2, "SCANNER", "P-RETRY")
    first = wait_until(lambda: [f for f in forwards(embedded_node) if f["attempts"] >= 1 and f["last_error"]], 90,
                       "a failed first attempt")
    assert first[0]["state"] in ("pending", "running")
    late = StoreScp(tmp_path, port, "LATE")
    try:
        wait_until(lambda: late.received() == set(uids), 90, "the study after the destination came up")
        done = wait_until(lambda: [f for f in forwards(embedded_node) if f["state"] == "done"], 30, "forward done")
        assert done[0]["attempts"] >= 2
        jobs = api(embedded_node, "GET", "/api/jobs").json()["jobs"]
        states = {job["state"] for job in jobs if job["kind"] == "auto-forward"}
        assert "done" in states and states & {"failed", "done"}
        assert any(job["failed"] == 2 for job in jobs if job["kind"] == "auto-forward")  # the first attempt
    finally:
        late.stop()


def test_a_forward_gives_up_after_its_attempts_and_rules_are_validated(embedded_node: Node, tmp_path: Path) -> None:
    register(embedded_node, "nowhere", "NOWHERE", free_port())
    assert api(embedded_node, "PATCH", "/api/config", {"study_stable_seconds": 1, "forward_retry_seconds": 1,
                                                       "forward_max_attempts": 2}).status_code == 200
    bad = api(embedded_node, "PUT", "/api/routing/rules/bad", {
        "destination": "nowhere", "trigger": "sometimes", "conditions": {"tags": {"NoSuchKeyword": "x"}}})
    assert bad.status_code == 422 and {p["key"] for p in bad.json()["detail"]} >= {"trigger", "conditions.tags"}
    unknown = api(embedded_node, "PUT", "/api/routing/rules/bad", {"destination": "unregistered"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["key"] == "destination"
    assert api(embedded_node, "PUT", "/api/routing/rules/give-up", {"destination": "nowhere"}).status_code == 201
    assert [r["name"] for r in api(embedded_node, "GET", "/api/routing/rules").json()] == ["give-up"]
    push(embedded_node, tmp_path, CTImageStorage, 1, "SCANNER", "P-GIVEUP")
    failed = wait_until(lambda: [f for f in forwards(embedded_node) if f["state"] == "failed"], 90,
                        "the forward marked failed")
    assert failed[0]["attempts"] == 2 and "1 of 1 instances failed" in failed[0]["last_error"]
    assert api(embedded_node, "DELETE", "/api/routing/rules/give-up").status_code == 204
    assert api(embedded_node, "GET", "/api/routing/rules/give-up").status_code == 404
    assert forwards(embedded_node) == []
