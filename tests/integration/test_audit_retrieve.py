"""The audit trail and /metrics for retrieval, refusals and failures, driven with dcmtk against `pacs serve`.

tests/integration/test_audit_trail.py covers C-ECHO, C-STORE, C-FIND, a rejected association and a REST change;
this module covers the rest of what the issue lists: a C-MOVE (movescu to a storescp destination) and a C-GET
(getscu) each leave their own row with status, sub-operation counts, duration, calling AE and address; a request
refused with 0x0124 and a C-STORE refused because the node is full are audited; and /metrics counts the errors
(failed operations, store failures, refused requests) besides the successes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from tests.destinations import StoreScp
from tests.factory import SampleFile, make_image, save
from tests.integration.test_audit_trail import metric_samples
from tests.integration.test_get import getscu
from tests.integration.test_move import movescu, register
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, push_files

pytestmark = pytest.mark.dcmtk

INSTANCES = 4
WORKSTATION = "WORKSTATION"
LIMITED = "ECHOONLY"  # registered with echo only: its C-FIND and C-GET are refused 0x0124
FULL = "FULLSTORE"  # stores once the node is full: 0xA700


@dataclass
class Session:
    node: Node
    study: str
    events: list[dict[str, Any]]


def audit(node: Node, **query: Any) -> list[dict[str, Any]]:
    answer = httpx.get(f"{node.api}/api/audit", params={"limit": 1000, **query}, timeout=10)
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def patch_config(node: Node, **values: Any) -> None:
    answer = httpx.patch(f"{node.api}/api/config", json=values, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    workdir = tmp_path_factory.mktemp("audit-retrieve")
    node = Node(workdir)
    node.service("serve")
    destination: StoreScp | None = None
    with node.running():
        destination = StoreScp(workdir / "destination")
        try:
            yield Session(node, *_drive(node, workdir, destination))
        finally:
            destination.stop()


def _drive(node: Node, workdir: Path, destination: StoreScp) -> tuple[str, list[dict[str, Any]]]:
    """Store a study, move it, get it, a refused C-GET, a C-STORE refused as the node is full; then the rows."""
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(INSTANCES):
        dataset = make_image(CTImageStorage, study, series, instance_number=number + 1)
        files.append(SampleFile(save(dataset, workdir / f"{dataset.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1",
                                dataset.SOPInstanceUID))
    push_files(node.dicom_port, files)
    node.wait_indexed(INSTANCES)
    register(node, "workstation", WORKSTATION, 104, ["echo", "find", "move", "get"])
    register(node, "limited", LIMITED, 104, ["echo"])
    register(node, "destination", destination.ae_title, destination.port, ["store"])
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}

    moved = movescu(node, destination.ae_title, keys)
    assert "Received Final Move Response (Success)" in moved.stdout + moved.stderr, moved.stdout + moved.stderr
    pulled = getscu(node, workdir / "pulled", keys)
    assert "Received C-GET Response (Success)" in pulled.stdout + pulled.stderr, pulled.stdout + pulled.stderr
    refused = getscu(node, workdir / "refused", keys, calling_aet=LIMITED)
    assert "0x124" in (refused.stdout + refused.stderr).lower().replace("0x0124", "0x124")
    find = subprocess.run([dcmtk_tool("findscu"), "-v", "-S", "-aet", LIMITED, "-aec", node.ae_title,
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                           str(node.dicom_port)], capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert "0x0124" in find.stdout + find.stderr or "0x124" in find.stdout + find.stderr, find.stdout + find.stderr

    patch_config(node, storage_max_instances=INSTANCES)

    def full() -> bool:
        path = save(make_image(), workdir / f"late-{generate_uid()}.dcm")
        answer = subprocess.run([dcmtk_tool("storescu"), "-v", "-aet", FULL, "-aec", node.ae_title, "127.0.0.1",
                                 str(node.dicom_port), str(path)], capture_output=True, text=True, timeout=60,
                                env=dcmtk_env())
        return "Refused: OutOfResources" in answer.stdout + answer.stderr

    wait_until(full, 60, "a C-STORE refused as the node is full", interval=0.5)  # the SCP learns totals lazily
    patch_config(node, storage_max_instances=None)

    def complete() -> list[dict[str, Any]] | None:
        events = audit(node)
        actions = {(event["action"], event["remote_aet"]) for event in events}
        wanted = {("c_move", WORKSTATION), ("c_get", WORKSTATION), ("c_get", LIMITED), ("c_find", LIMITED),
                  ("request_refused", LIMITED), ("association", LIMITED), ("c_store", FULL), ("association", FULL),
                  ("storage_full", FULL)}
        moves = [e for e in events if e["action"] == "association" and e["remote_aet"] == WORKSTATION]
        # The rows of the refused store come with the buffer's next write, maybe after those of earlier stores.
        refused_store = any(e["action"] == "c_store" and e["remote_aet"] == FULL and e["outcome"] == "failure"
                            for e in events)
        return events if wanted <= actions and len(moves) == 2 and refused_store else None

    return study, wait_until(complete, 60, "the audit rows of the session")


def only(events: list[dict[str, Any]], action: str, remote_aet: str) -> dict[str, Any]:
    found = [event for event in events if event["action"] == action and event["remote_aet"] == remote_aet]
    assert len(found) == 1, (action, remote_aet, found)
    return found[0]


def test_a_c_move_is_one_row_with_its_status_sub_operations_and_duration(session: Session) -> None:
    move = only(session.events, "c_move", WORKSTATION)
    assert move["outcome"] == "success" and move["remote_ip"] == "127.0.0.1" and move["occurred_at"].endswith("Z")
    details = move["details"]
    assert details["status"] == "0x0000" and details["completed"] == INSTANCES and details["failed"] == 0
    assert details["sop_class_uid"] == "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root MOVE
    assert details["duration_ms"] > 0 and details["called_aet"] == "PACS"


def test_a_c_get_is_one_row_and_its_association_counts_the_bytes_sent(session: Session) -> None:
    get = only(session.events, "c_get", WORKSTATION)
    assert get["outcome"] == "success" and get["remote_ip"] == "127.0.0.1"
    details = get["details"]
    assert details["status"] == "0x0000" and details["completed"] == INSTANCES and details["failed"] == 0
    assert details["sop_class_uid"] == "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root GET
    assert details["duration_ms"] > 0
    associations = [e for e in session.events if e["action"] == "association" and e["remote_aet"] == WORKSTATION]
    by_operation = {tuple(e["details"]["operations"]): e for e in associations}
    assert set(by_operation) == {("c_move",), ("c_get",)}
    getter = by_operation[("c_get",)]
    assert getter["outcome"] == "released" and getter["details"]["operations"] == {"c_get": 1}
    assert by_operation[("c_move",)]["details"]["bytes_sent"] == 0  # a move sends on another association


def test_the_bytes_a_c_get_sends_are_counted(session: Session) -> None:
    [getter] = [e for e in session.events if e["action"] == "association" and e["remote_aet"] == WORKSTATION
                and e["details"]["operations"] == {"c_get": 1}]
    assert getter["details"]["bytes_sent"] > INSTANCES * 16 * 16 * 2  # the instances went back on it

    def sent_bytes() -> float | None:  # the listener's counters travel in its heartbeat
        sent = metric_samples(session.node).get(("pacs_scp_sent_bytes_total", ()), 0.0)
        return sent if sent > INSTANCES * 16 * 16 * 2 else None

    wait_until(sent_bytes, 15, "the listener's heartbeat to carry the bytes the C-GET sent")


def test_a_refused_request_and_a_refused_store_are_audited(session: Session) -> None:
    refused = {row["details"]["service"]: row for row in session.events
               if row["action"] == "request_refused" and row["remote_aet"] == LIMITED}
    assert sorted(refused) == ["find", "get"]  # C-GET refused like the other services
    for service, row in refused.items():
        assert row["outcome"] == "refused" and row["remote_ip"] == "127.0.0.1"
        assert row["details"] == {"service": service, "status": 0x0124, "reason": "service_not_allowed"}
    assert only(session.events, "c_find", LIMITED)["details"]["status"] == "0x0124"
    get = only(session.events, "c_get", LIMITED)  # the refused C-GET: its own row, with the refusal status
    assert get["outcome"] == "failure" and get["details"]["status"] == "0x0124"
    stores = [e for e in session.events if e["action"] == "c_store" and e["remote_aet"] == FULL]
    failed = [e for e in stores if e["outcome"] == "failure"]
    assert failed and failed[0]["details"]["statuses"] == {"0xA700": 1}
    full = [e for e in session.events if e["action"] == "storage_full" and e["remote_aet"] == FULL]
    assert full and full[0]["details"]["status"] == "0xA700"


def test_the_audit_filters_select_retrieval_and_failures(session: Session) -> None:
    node = session.node
    assert {e["action"] for e in audit(node, action="c_move,c_get")} == {"c_move", "c_get"}
    assert {(e["action"], e["remote_aet"]) for e in audit(node, action="c_get", outcome="success")} == \
        {("c_get", WORKSTATION)}
    assert {e["remote_aet"] for e in audit(node, outcome="failure")} >= {FULL, LIMITED}


def test_metrics_count_retrieval_and_errors(session: Session) -> None:
    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = metric_samples(session.node)  # the listener's counters travel in its heartbeat
        return samples if samples.get(("pacs_scp_store_failures_total", ()), 0) >= 1 else None

    samples = wait_until(counted, 15, "the listener's heartbeat to carry the failure")

    def operations(operation: str, outcome: str) -> float:
        return samples.get(("pacs_scp_operations_total", (("operation", operation), ("outcome", outcome))), 0)

    assert operations("c_move", "success") == 1 and operations("c_get", "success") == 1
    assert operations("c_get", "failure") == 1 and operations("c_find", "failure") == 1  # the refused ones
    assert operations("c_store", "failure") >= 1
    assert samples[("pacs_scp_requests_refused_total", (("service", "find"),))] == 1
    assert samples[("pacs_scp_requests_refused_total", (("service", "get"),))] == 1
    assert samples[("pacs_jobs", (("state", "done"),))] >= 1  # the C-MOVE ran as a job
    assert samples[("pacs_jobs", (("state", "failed"),))] == 0
