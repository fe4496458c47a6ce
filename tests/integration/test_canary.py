"""A patient-data canary (a distinctive name and ID) sent through every path never shows up in a log line, in a
task message waiting in Redis, in a metric label or in the audit trail (issue #6, DESIGN invariant 4)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import redis
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import CTImageStorage, generate_uid

from tests.destinations import StoreScp
from tests.factory import SampleFile, make_image, save, with_file_meta
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, push_files

CANARY_NAME = "Zzyzxcanary^Quetzalbird"
CANARY_ID = "CANARY-7391-PID"
CANARY_WORDS = ("zzyzxcanary", "quetzalbird", "canary-7391-pid")
WORKSTATION = "CANARYWS"


def leaked(text: str) -> list[str]:
    lowered = text.lower()
    return [word for word in CANARY_WORDS if word in lowered]


def redis_contents(url: str) -> str:
    """Every value in the Redis database, Celery message bodies decoded (they are base64 JSON)."""
    client = redis.Redis.from_url(url)
    texts = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        values: list[bytes] = []
        if kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = list(client.hgetall(key).values())
        elif kind == "string":
            values = [client.get(key) or b""]
        elif kind in ("set", "zset"):
            values = list(client.smembers(key)) if kind == "set" else client.zrange(key, 0, -1)
        for value in values:
            texts.append(value.decode(errors="replace"))
            texts.extend(_decoded_bodies(value))
    return "\n".join(texts)


def _decoded_bodies(value: bytes) -> list[str]:
    try:
        message: Any = json.loads(value)
    except ValueError:
        return []
    body = message.get("body") if isinstance(message, dict) else None
    if not isinstance(body, str):
        return []
    try:
        return [base64.b64decode(body).decode(errors="replace")]
    except ValueError:
        return [body]


def dcmtk(tool: str, node: Node, *arguments: str) -> str:
    result = subprocess.run([dcmtk_tool(tool), "-v", "-S", "-aet", WORKSTATION, "-aec", node.ae_title, *arguments,
                             "127.0.0.1", str(node.dicom_port)], capture_output=True, text=True, timeout=120,
                            env=dcmtk_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_canary_never_reaches_logs_task_messages_metrics_or_audit(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url,
                           "PACS_LOG_LEVEL": "DEBUG"})  # the default layout: patient/study/series
    assert node.run("migrate").returncode == 0
    for service in ("scp", "mover", "api"):  # no indexer yet: the events wait in Redis
        node.service(service)
    node.wait_ready()
    destination = StoreScp(tmp_path, ae_title="CANARYDEST")
    try:
        for name, body in (("ws", {"ae_title": WORKSTATION, "host": "127.0.0.1", "port": 104,
                                   "allow": ["echo", "store", "find", "move", "get"]}),
                           ("dest", {"ae_title": destination.ae_title, "host": "127.0.0.1",
                                     "port": destination.port, "allow": ["store"]})):
            assert httpx.put(f"{node.api}/api/modalities/{name}", json=body, timeout=10).status_code in (200, 201)
        study, series = generate_uid(), generate_uid()
        datasets = [make_image(CTImageStorage, study, series, patient_id=CANARY_ID, patient_name=CANARY_NAME,
                               instance_number=n + 1) for n in range(3)]
        push_files(node.dicom_port, [SampleFile(save(ds, tmp_path / f"{n}.dcm"), "1.2.840.10008.1.2.1",
                                                ds.SOPInstanceUID) for n, ds in enumerate(datasets)])
        def events_queued() -> str | None:
            text = redis_contents(redis_url)
            return text if datasets[2].SOPInstanceUID in text else None

        queued = wait_until(events_queued, 15, "the events waiting in Redis, by UID")
        assert leaked(queued) == [], [line for line in queued.splitlines() if leaked(line)][:3]

        node.service("indexer")
        node.wait_indexed(3)
        assert "Zzyzx" in dcmtk("findscu", node, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=Zzyzx*",
                                "-k", f"PatientID={CANARY_ID}")  # the answer itself carries the name: fine
        assert "Final Move Response (Success)" in dcmtk(
            "movescu", node, "-aem", destination.ae_title, "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"PatientID={CANARY_ID}")
        assert "C-GET Response (Success)" in dcmtk("getscu", node, "-od", str(tmp_path), "-k",
                                                   "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
        web = DICOMwebClient(url=f"{node.api}/dicomweb")
        assert web.search_for_studies(search_filters={"PatientName": "Zzyzx*"})
        stowed = with_file_meta(make_image(CTImageStorage, patient_id=CANARY_ID, patient_name=CANARY_NAME),
                                "1.2.840.10008.1.2.1")
        web.store_instances([stowed])
        web.retrieve_study(study)
        sent = httpx.post(f"{node.api}/api/modalities/dest/store", json={"studies": [study]}, timeout=30)
        assert sent.status_code == 202
        wait_until(lambda: httpx.get(f"{node.api}{sent.headers['location']}", timeout=10).json()["finished_at"],
                   60, "the REST send")
        node.wait_indexed(4)

        assert leaked(redis_contents(redis_url)) == []
        assert leaked(httpx.get(f"{node.api}/metrics", timeout=10).text) == []
        assert leaked(httpx.get(f"{node.api}/api/audit?limit=500", timeout=10).text) == []
    finally:
        destination.stop()
        node.stop()
    logs = node.logs()
    assert "scp" in logs and "indexer" in logs
    assert leaked(logs) == []
