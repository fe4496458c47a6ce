"""REST sends (POST /api/modalities/{name}/store) and their jobs (GET /api/jobs), driven from outside a running
`pacs serve`: storescu pushes, the API asks, the mover sends, dcmtk's storescp receives."""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from tests.conftest import S3Server
from tests.factory import SampleFile, dataset_start, make_image, save
from tests.faults import OwnRedis
from tests.integration.test_move import StoreScp
from tests.node import Node, free_port, wait_until
from tests.peers import push_files
from tests.stored import stored_object

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
FINISHED = ("done", "failed", "cancelled")


class Study:
    """A study held by the node: two series (numbers 1 and 2), instances in sending order."""

    def __init__(self, uid: str, series: dict[str, list[str]]) -> None:
        self.uid = uid
        self.series = series  # SeriesInstanceUID -> SOPInstanceUIDs by instance number (series number order)

    @property
    def instances(self) -> list[str]:
        return [sop for sops in self.series.values() for sop in sops]


def push_study(node: Node, workdir: Path, patient_id: str, counts: tuple[int, int] = (4, 3)) -> Study:
    """Push a study with storescu (in shuffled order); its files stay in ``workdir``/push-<study>/<sop>.dcm."""
    study = generate_uid()
    series: dict[str, list[str]] = {}
    datasets = []
    for number, (count, sop_class) in enumerate(zip(counts, (CTImageStorage, MRImageStorage)), 1):
        series_uid = generate_uid()
        series[series_uid] = []
        for instance_number in range(1, count + 1):
            ds = make_image(sop_class, study, series_uid, patient_id=patient_id, instance_number=instance_number)
            ds.SeriesNumber = number
            series[series_uid].append(ds.SOPInstanceUID)
            datasets.append(ds)
    random.Random(7).shuffle(datasets)  # arrival order is not sending order
    folder = workdir / f"push-{study}"
    folder.mkdir()
    files = [SampleFile(save(ds, folder / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_files(node.dicom_port, files)
    return Study(study, series)


def register(node: Node, name: str, ae_title: str, port: int, **extra: Any) -> None:
    response = httpx.put(f"{node.api}/api/modalities/{name}", timeout=10,
                         json={"ae_title": ae_title, "host": "127.0.0.1", "port": port, **extra})
    assert response.status_code in (200, 201), response.text


def send(node: Node, name: str, body: Any) -> httpx.Response:
    return httpx.post(f"{node.api}/api/modalities/{name}/store", json=body, timeout=30)


def finished_job(node: Node, response: httpx.Response, timeout: float = 60) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location == f"/api/jobs/{response.json()['job_id']}"

    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = node.get(location).json()
        return job if job["state"] in FINISHED else None

    result: dict[str, Any] = wait_until(done, timeout, "the job to finish", interval=0.2)
    return result


def stored_dataset(node: Node, sop_uid: str) -> bytes:
    stored = stored_object(node.data_dir, sop_uid).read_bytes()
    return stored[dataset_start(stored):]


def assert_received_exactly(node: Node, receiver: StoreScp, sop_uids: list[str]) -> None:
    received = receiver.received()
    assert sorted(received) == sorted(sop_uids)
    for sop_uid, dataset in received.items():
        assert dataset == stored_dataset(node, sop_uid), f"{sop_uid} differs from what the node holds"


def calling_ae_titles(receiver: StoreScp) -> set[str]:
    return set(re.findall(r"Calling Application Name:[ \t]+(\S+)", receiver.log.read_text()))


def audit_events(node: Node, action: str) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{node.data_dir / 'index.sqlite3'}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT outcome, details FROM audit_events WHERE action = ? ORDER BY pk", (action,)))


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[dict[str, StoreScp]]:
    started: dict[str, StoreScp] = {}
    try:
        for ae_title in ("DEST", "DEST2", "DEST3"):
            started[ae_title] = StoreScp(tmp_path, ae_title)
        yield started
    finally:
        for receiver in started.values():
            receiver.stop()


def test_a_study_is_sent_byte_identical_and_its_job_reports_every_instance(
    embedded_node: Node, tmp_path: Path, receivers: dict[str, StoreScp]
) -> None:
    node, receiver = embedded_node, receivers["DEST"]
    study = push_study(node, tmp_path, "P-SEND")
    other = push_study(node, tmp_path, "P-OTHER", (2, 1))
    node.wait_indexed(len(study.instances) + len(other.instances))
    register(node, "viewer", receiver.ae_title, receiver.port)

    response = send(node, "viewer", {"studies": [study.uid]})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["total"] == 7 and accepted["state"] == "queued" and re.fullmatch(r"[0-9a-f]{32}",
                                                                                      accepted["job_id"])
    assert accepted["unmatched"] == {"studies": [], "series": [], "instances": []}
    job = finished_job(node, response)

    assert job["id"] == accepted["job_id"] and job["kind"] == "rest-store" and job["state"] == "done"
    assert (job["total"], job["completed"], job["failed"], job["warning"], job["remaining"]) == (7, 7, 0, 0, 0)
    assert job["failed_instances"] == []
    assert job["destination"] == {"ae_title": "DEST", "host": "127.0.0.1", "port": receiver.port}
    assert job["calling_ae_title"] == "PACS"
    for key in ("created_at", "updated_at", "finished_at"):
        assert ISO_UTC.fullmatch(job[key]), (key, job[key])
    assert_received_exactly(node, receiver, study.instances)  # the other study stays home
    assert calling_ae_titles(receiver) == {"PACS"}

    listing = node.get("/api/jobs").json()
    assert listing["total"] == 1 and [item["id"] for item in listing["jobs"]] == [job["id"]]
    assert "failed_instances" not in listing["jobs"][0]
    assert node.get("/api/jobs?state=done").json()["total"] == 1
    assert node.get("/api/jobs?state=failed").json() == {"total": 0, "limit": 100, "offset": 0, "jobs": []}

    [(outcome, details)] = audit_events(node, "rest_send")
    assert outcome == "success" and job["id"] in details and study.uid in details


def test_one_series_and_single_instances_are_sent_in_series_and_instance_order(
    embedded_node: Node, tmp_path: Path, receivers: dict[str, StoreScp]
) -> None:
    node = embedded_node
    study = push_study(node, tmp_path, "P-PARTS")
    node.wait_indexed(len(study.instances))
    first_series, second_series = list(study.series)
    register(node, "series-dest", "DEST", receivers["DEST"].port, local_ae_title="PACS_OUT")
    register(node, "instance-dest", "DEST2", receivers["DEST2"].port)

    job = finished_job(node, send(node, "series-dest", {"series": [second_series]}))
    assert (job["state"], job["total"], job["completed"], job["failed"]) == ("done", 3, 3, 0)
    assert job["calling_ae_title"] == "PACS_OUT"
    assert_received_exactly(node, receivers["DEST"], study.series[second_series])
    assert calling_ae_titles(receivers["DEST"]) == {"PACS_OUT"}  # the modality's local AE title

    # Single instances, named out of order, one of them twice and one through its series too: each is sent once.
    wanted = [study.series[second_series][0], study.series[first_series][2], study.series[first_series][0]]
    job = finished_job(node, send(node, "instance-dest", {
        "instances": [*wanted, wanted[0]], "series": [], "studies": []}))
    assert (job["state"], job["total"], job["completed"], job["failed"]) == ("done", 3, 3, 0)
    assert_received_exactly(node, receivers["DEST2"], wanted)

    # Sending order: series number, then instance number (whatever the arrival order was). The order is visible
    # in the storescp log of a third destination.
    register(node, "ordered", "DEST3", receivers["DEST3"].port)
    job = finished_job(node, send(node, "ordered", {"instances": list(reversed(study.instances))}))
    assert job["completed"] == len(study.instances)
    log = receivers["DEST3"].log.read_text()
    order = sorted(study.instances, key=lambda uid: re.search(re.escape(uid) + r"(?![0-9.])", log).start())
    assert order == study.instances


def test_a_send_that_matches_nothing_is_a_finished_job_with_nothing_to_do(
    embedded_node: Node, receivers: dict[str, StoreScp]
) -> None:
    node = embedded_node
    register(node, "viewer", "DEST", receivers["DEST"].port)
    unknown = generate_uid()
    response = send(node, "viewer", {"studies": [unknown]})
    assert response.status_code == 202, response.text
    assert response.json()["total"] == 0 and response.json()["state"] == "done"
    assert response.json()["unmatched"] == {"studies": [unknown], "series": [], "instances": []}
    job = finished_job(node, response)
    assert (job["state"], job["total"], job["completed"], job["failed"], job["remaining"]) == ("done", 0, 0, 0, 0)
    assert ISO_UTC.fullmatch(job["finished_at"])
    assert receivers["DEST"].received() == {}


def test_unknown_modalities_bad_bodies_and_bad_job_ids_are_refused(embedded_node: Node) -> None:
    node = embedded_node
    register(node, "viewer", "DEST", free_port())
    study = generate_uid()

    response = send(node, "nowhere", {"studies": [study]})
    assert response.status_code == 404, response.text
    assert send(node, "bad name!", {"studies": [study]}).status_code in (404, 422)

    for body, key in (
        ({"studies": ["../../etc/passwd"]}, "studies"),
        ({"series": [study, "1.2.x"]}, "series"),
        ({"instances": ["1" * 65]}, "instances"),
        ({"instances": [12345]}, "instances"),
        ({"studies": study}, "studies"),
        ({"studies": [study], "patients": ["1.2"]}, "patients"),
        ({}, "body"),
        ({"studies": [], "series": [], "instances": []}, "body"),
        (["1.2.3"], "body"),
    ):
        response = send(node, "viewer", body)
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"]
        assert [problem["key"] for problem in detail] == [key], (body, detail)
        assert "../" not in response.text and "1.2.x" not in response.text  # values are not echoed
    assert node.get("/api/jobs").json()["total"] == 0, "nothing refused created a job"

    assert node.get(f"/api/jobs/{'0' * 32}").status_code == 404
    for bad in ("1234", "g" * 32, "0" * 33, "..%2F..%2Fx"):
        assert node.get(f"/api/jobs/{bad}").status_code in (404, 422), bad
    assert node.get("/api/jobs/not-a-job-id").status_code == 422
    assert node.get("/api/jobs?limit=501").status_code == 422
    assert node.get("/api/jobs?limit=0").status_code == 422
    assert node.get("/api/jobs?offset=-1").status_code == 422
    assert node.get("/api/jobs?state=finished").status_code == 422
    assert node.get("/api/jobs?limit=500").status_code == 200


def test_a_destination_nobody_listens_on_fails_every_instance_and_lists_them(
    embedded_node: Node, tmp_path: Path
) -> None:
    node = embedded_node
    study = push_study(node, tmp_path, "P-DOWN")
    node.wait_indexed(len(study.instances))
    register(node, "gone", "GONE", free_port())

    job = finished_job(node, send(node, "gone", {"studies": [study.uid]}))
    assert job["state"] == "failed"
    assert (job["total"], job["completed"], job["failed"], job["warning"], job["remaining"]) == (7, 0, 7, 0, 0)
    assert job["failed_instances"] == study.instances  # every one, in sending order
    assert job["error"] and ISO_UTC.fullmatch(job["finished_at"])
    assert node.get("/api/jobs?state=failed").json()["total"] == 1
    assert node.get("/api/jobs?state=done").json()["total"] == 0


def test_the_distributed_form_sends_from_s3_and_a_send_the_queue_refuses_is_503_and_a_failed_job(
    tmp_path: Path, postgres_url: str, own_redis: OwnRedis, s3_server: S3Server, receivers: dict[str, StoreScp]
) -> None:
    """Separate `pacs scp|indexer|mover|api` on PostgreSQL, Redis and S3: the mover streams each object through
    its spool folder; with Redis down the API answers 503 and the job it created is failed, never left queued."""
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": own_redis.url, **s3_server.env()})
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    try:
        for service in ("scp", "indexer", "mover", "api"):
            node.service(service)
        node.wait_ready()
        study = push_study(node, tmp_path, "P-DIST")
        node.wait_indexed(len(study.instances))
        register(node, "viewer", "DEST", receivers["DEST"].port)

        job = finished_job(node, send(node, "viewer", {"studies": [study.uid]}))
        assert (job["state"], job["completed"], job["failed"]) == ("done", 7, 0)
        received = receivers["DEST"].received()
        pushed = tmp_path / f"push-{study.uid}"
        assert sorted(received) == sorted(study.instances)
        for sop_uid, dataset in received.items():
            original = (pushed / f"{sop_uid}.dcm").read_bytes()
            assert dataset == original[dataset_start(original):]
        assert list((node.data_dir / "spool").iterdir()) == [], "spooled copies are removed after each send"

        own_redis.stop()
        response = send(node, "viewer", {"series": [list(study.series)[0]]})
        assert response.status_code == 503, response.text
        [failed] = node.get("/api/jobs?state=failed").json()["jobs"]
        assert (failed["total"], failed["failed"], failed["remaining"]) == (4, 4, 0)
        assert failed["error"] == "the job could not be queued" and failed["finished_at"]
        assert node.get(f"/api/jobs/{failed['id']}").json()["failed_instances"] == list(study.series.values())[0]
        assert node.get("/api/jobs?state=queued").json()["total"] == 0
    finally:
        node.stop()
        print(node.logs())
