"""The audit trail and /metrics of a running node, driven with dcmtk (echoscu, storescu, findscu).

Every association and DIMSE operation leaves a row (C-STORE: one summary per association), rejected associations
and REST changes too; /metrics counts what the listener did. No patient data in either: the instances sent here
carry a distinctive patient name and ID that must appear nowhere.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from tests.factory import make_image, save
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, echoscu, storescu

CANARY_NAME = "Canarybird^Zebulon"
CANARY_ID = "CANARY-778899"
STORED = 5


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("audit"))
    node.service("serve")
    with node.running():
        yield node


@pytest.fixture(scope="module")
def session(node: Node, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One echoscu, one storescu of STORED instances, one findscu, one refused association; then the audit."""
    files_dir = tmp_path_factory.mktemp("files")
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = [save(make_image(study_uid=study_uid, series_uid=series_uid, patient_id=CANARY_ID,
                             patient_name=CANARY_NAME, instance_number=i + 1), files_dir / f"{i}.dcm")
             for i in range(STORED)]
    started = datetime.now(timezone.utc)
    assert echoscu(node.dicom_port, calling_aet="ECHOER").returncode == 0
    result = storescu(node.dicom_port, paths, calling_aet="STORER")
    assert result.returncode == 0, result.stderr
    registered = httpx.put(f"{node.api}/api/modalities/finder", timeout=10, json={
        "ae_title": "FINDER", "host": "127.0.0.1", "port": 104, "allow": ["echo", "find"]})
    assert registered.status_code == 201, registered.text
    node.wait_indexed(STORED)
    find = subprocess.run([dcmtk_tool("findscu"), "-S", "-aet", "FINDER", "-aec", node.ae_title,
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                           "-k", "PatientName", "127.0.0.1", str(node.dicom_port)],
                          capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert find.returncode == 0, find.stderr
    assert echoscu(node.dicom_port, called_aet="NOT-US", calling_aet="ECHOER").returncode != 0

    def complete() -> list[dict[str, Any]] | None:
        events = audit(node, limit=100)["events"]
        actions = [event["action"] for event in events]
        wanted = ["association"] * 3 + ["c_echo", "c_store", "c_find", "association_rejected", "modality_saved"]
        return events if all(actions.count(a) >= wanted.count(a) for a in set(wanted)) else None

    events = wait_until(complete, 60, "the audit rows of the session")
    return {"events": events, "started": started, "study_uid": study_uid}


def audit(node: Node, **query: Any) -> dict[str, Any]:
    answer = httpx.get(f"{node.api}/api/audit", params=query, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def one(events: list[dict[str, Any]], action: str, remote_aet: str) -> dict[str, Any]:
    found = [e for e in events if e["action"] == action and e["remote_aet"] == remote_aet]
    assert len(found) == 1, (action, remote_aet, found)
    return found[0]


def test_each_association_and_operation_is_audited(session: dict[str, Any]) -> None:
    events = session["events"]
    echo = one(events, "c_echo", "ECHOER")
    assert echo["outcome"] == "success" and echo["remote_ip"] == "127.0.0.1"
    assert echo["details"]["status"] == "0x0000" and echo["details"]["duration_ms"] >= 0
    assert echo["details"]["called_aet"] == "PACS"

    store = one(events, "c_store", "STORER")
    assert store["outcome"] == "success"
    details = store["details"]
    assert details["instances"] == STORED and details["statuses"] == {"0x0000": STORED}
    assert details["bytes"] > STORED * 16 * 16 * 2 and details["duration_ms"] >= details["longest_ms"] >= 0

    find = one(events, "c_find", "FINDER")
    assert find["outcome"] == "success" and find["details"]["matches"] == 1
    assert find["details"]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root FIND

    associations = {e["remote_aet"]: e for e in events if e["action"] == "association"}
    assert set(associations) >= {"ECHOER", "STORER", "FINDER"}
    storer = associations["STORER"]
    assert storer["outcome"] == "released" and storer["remote_ip"] == "127.0.0.1"
    assert storer["details"]["operations"] == {"c_store": STORED}
    assert storer["details"]["bytes_received"] == details["bytes"] and storer["details"]["called_aet"] == "PACS"
    assert storer["details"]["duration_ms"] > 0 and storer["details"]["started_at"].endswith("Z")
    assert associations["FINDER"]["details"]["bytes_sent"] > 0  # the match was sent back

    rejected = one(events, "association_rejected", "ECHOER")
    assert rejected["details"]["reason"] == "called_aet_not_recognized"
    saved = next(e for e in events if e["action"] == "modality_saved")
    assert saved["details"]["actor"] == "anonymous-loopback" and saved["details"]["name"] == "finder"


def test_no_patient_data_in_the_audit_trail_or_the_metrics(node: Node, session: dict[str, Any]) -> None:
    text = json.dumps(session["events"]) + httpx.get(f"{node.api}/metrics", timeout=10).text
    for canary in (CANARY_NAME, CANARY_ID, "Canarybird", "778899"):
        assert canary not in text
    assert "Canarybird" not in node.logs() and CANARY_ID not in node.logs()


def test_the_audit_is_paged_newest_first_and_filtered(node: Node, session: dict[str, Any]) -> None:
    everything = audit(node, limit=1000)
    assert everything["total"] == len(everything["events"]) >= 8
    times = [event["occurred_at"] for event in everything["events"]]
    assert times == sorted(times, reverse=True)
    first, second = audit(node, limit=1)["events"], audit(node, limit=1, offset=1)["events"]
    assert [first[0]["id"], second[0]["id"]] == [e["id"] for e in everything["events"][:2]]

    storer = audit(node, remote_aet="STORER")
    assert {e["action"] for e in storer["events"]} == {"association", "c_store"} and storer["total"] == 2
    both = audit(node, action="c_echo,c_find")["events"]
    assert sorted(e["action"] for e in both) == ["c_echo", "c_find"]
    assert {e["outcome"] for e in audit(node, outcome="released")["events"]} == {"released"}
    assert audit(node, remote_ip="10.9.9.9")["total"] == 0
    started = session["started"]
    assert audit(node, since=(started - timedelta(minutes=1)).isoformat())["total"] == everything["total"]
    assert audit(node, until=started.isoformat())["total"] == 0
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert audit(node, since=future)["total"] == 0
    bad = httpx.get(f"{node.api}/api/audit", params={"since": "yesterday"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"][0]["key"] == "since"
    assert httpx.get(f"{node.api}/api/audit", params={"limit": 0}, timeout=10).status_code == 422


def metric_samples(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{node.api}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "replica"))
            samples[(sample.name, labels)] = samples.get((sample.name, labels), 0.0) + sample.value
    return samples


def test_metrics_count_what_the_listener_did(node: Node, session: dict[str, Any]) -> None:
    def moved() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        # Counters travel in heartbeats, one per SCP process: the session's associations may have gone to different
        # processes, so wait until the heartbeats carry every operation of the session, not only the last one's.
        samples = metric_samples(node)
        stored = samples.get(("pacs_scp_instances_stored_total", ()), 0)
        echoed = samples.get(("pacs_scp_operations_total", (("operation", "c_echo"), ("outcome", "success"))), 0)
        found = samples.get(("pacs_scp_operations_total", (("operation", "c_find"), ("outcome", "success"))), 0)
        refused = samples.get(("pacs_scp_associations_rejected_total", (("reason", "called_aet_not_recognized"),)), 0)
        return samples if stored >= STORED and echoed >= 1 and found >= 1 and refused >= 1 else None

    samples = wait_until(moved, 15, "the listener's heartbeat to carry the counters")
    assert samples[("pacs_scp_operations_total", (("operation", "c_store"), ("outcome", "success")))] >= STORED
    assert samples[("pacs_scp_operations_total", (("operation", "c_echo"), ("outcome", "success")))] >= 1
    assert samples[("pacs_scp_operations_total", (("operation", "c_find"), ("outcome", "success")))] >= 1
    assert samples[("pacs_scp_associations_total", (("event", "accepted"),))] >= 3
    assert samples[("pacs_scp_associations_rejected_total", (("reason", "called_aet_not_recognized"),))] >= 1
    assert samples[("pacs_scp_store_latency_seconds_count", ())] >= STORED
    assert samples[("pacs_scp_store_latency_seconds_bucket", (("le", "+Inf"),))] >= STORED
    assert samples[("pacs_scp_received_bytes_total", ())] > 0 and samples[("pacs_scp_stored_bytes_total", ())] > 0
    assert samples[("pacs_scp_associations_current", ())] == 0
    assert samples[("pacs_queue_pending", ())] == 0 and samples[("pacs_queue_dead_letters", ())] == 0
    assert samples[("pacs_index_instances", ())] == STORED and samples[("pacs_index_up", ())] == 1
    listeners = [beat for beat in node.status()["services"]["scp"] if beat["alive"]]  # one per CPU (scp_processes)
    assert len(listeners) >= 1 and samples[("pacs_service_up", (("service", "scp"),))] == len(listeners)
    assert samples[("pacs_jobs", (("state", "failed"),))] == 0
    assert samples[("pacs_scp_tls_handshake_failures_total", ())] == 0
    # A second push moves the counters again.
    before = samples[("pacs_scp_store_latency_seconds_count", ())]
    paths = [save(make_image(), Path(node.workdir) / "extra.dcm")]
    assert storescu(node.dicom_port, paths, calling_aet="STORER").returncode == 0
    wait_until(lambda: metric_samples(node)[("pacs_scp_store_latency_seconds_count", ())] > before, 15,
               "the store latency count to move")


def test_status_reports_the_ingest_rate_and_hides_the_raw_counters(node: Node, session: dict[str, Any]) -> None:
    status = node.status()
    assert status["ingest"]["window_minutes"] == 5 and status["ingest"]["instances"] >= STORED
    assert status["ingest"]["per_minute"] == round(status["ingest"]["instances"] / 5, 1)
    assert all("metrics" not in beat for beat in status["services"]["scp"])
    # Each service's heartbeat: every service `pacs serve` runs is listed, alive, with when it was last seen.
    for service in ("scp", "indexer", "mover", "api"):
        beats = status["services"][service]
        assert len(beats) == 1 or service == "scp"  # several SCP processes share the DICOM port (scp_processes)
        for beat in beats:
            assert beat["alive"] is True and beat["last_seen"].endswith("Z") and beat["started_at"].endswith("Z")


def test_studies_are_listed_and_filtered_by_sending_ae(node: Node, session: dict[str, Any]) -> None:
    def studies(**query: Any) -> dict[str, Any]:
        answer = httpx.get(f"{node.api}/api/studies", params=query, timeout=10)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    sent = studies(sending_aet="STORER")
    assert sent["total"] >= 1
    study = next(s for s in sent["studies"] if s["study_instance_uid"] == session["study_uid"])
    assert study["sending_aets"] == ["STORER"] and study["instances"] == STORED and study["series"] == 1
    assert study["modalities"] == ["CT"] and study["last_update"].endswith("Z")
    assert studies(remote_aet="STORER")["total"] == sent["total"]
    assert studies(sending_aet="NOBODY")["total"] == 0
    assert studies(sending_aet="STORER", patient_id=CANARY_ID)["total"] == 1
    assert studies(patient_name="canarybird*", modality="CT,MR")["total"] == 1
    assert studies(patient_name="canarybird*", modality="MR")["total"] == 0
    paged = studies(limit=1, offset=0)
    assert len(paged["studies"]) == 1 and paged["limit"] == 1
    assert httpx.get(f"{node.api}/api/studies", params={"limit": 501}, timeout=10).status_code == 422


def test_the_trail_and_the_metrics_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url})
    node.service("serve")
    try:
        node.wait_ready()
        paths = [save(make_image(patient_id=CANARY_ID, patient_name=CANARY_NAME), tmp_path / f"{i}.dcm")
                 for i in range(3)]
        assert storescu(node.dicom_port, paths, calling_aet="PGSTORER").returncode == 0
        assert echoscu(node.dicom_port, calling_aet="PGECHO").returncode == 0
        events = wait_until(lambda: (lambda rows: rows if {"c_store", "c_echo"} <= {e["action"] for e in rows}
                                     and len(rows) >= 4 else None)(audit(node)["events"]), 30, "the rows")
        store = one(events, "c_store", "PGSTORER")
        assert store["details"]["instances"] == 3 and store["outcome"] == "success", store
        assert one(events, "association", "PGECHO")["details"]["operations"] == {"c_echo": 1}
        assert audit(node, remote_aet="PGECHO", action="c_echo")["total"] == 1
        wait_until(lambda: metric_samples(node).get(("pacs_scp_instances_stored_total", ()), 0) >= 3, 15,
                   "the stored counter")
        assert CANARY_ID not in json.dumps(events)
    finally:
        node.stop()
        print(node.logs())
