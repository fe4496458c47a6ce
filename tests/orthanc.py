"""Orthanc (the Debian package) as a second PACS beside the node: its own folder, ports and AE title."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.node import free_port, wait_until

ORTHANC_AET = "ORTHANC"


def orthanc_executable() -> str:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)
    if found is None:
        raise AssertionError("Orthanc is required for the peer tests (apt-get install orthanc; .ci/run does it)")
    return found


class OrthancPeer:
    """One Orthanc process that knows the node as the modality ``pacs``."""

    def __init__(self, workdir: Path, node_ae_title: str, node_port: int) -> None:
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = {
            "Name": "peer",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"pacs": [node_ae_title, "127.0.0.1", node_port]},
            "DicomScuTimeout": 30,
            "Plugins": [],
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "OrthancPeer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=1))
        log = open(self.workdir / "orthanc.log", "ab")
        self.process = subprocess.Popen([orthanc_executable(), str(config_path)], stdout=log,
                                        stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
        log.close()
        wait_until(lambda: httpx.get(f"{self.url}/system", timeout=2).status_code == 200, 60, "Orthanc")
        return self

    def stop(self) -> None:
        """Killed, not stopped: the peer is thrown away with its folder, and Orthanc's clean stop takes 2.5 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=60)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=120)
        assert response.status_code == 200, f"Orthanc {path}: {response.status_code} {response.text}"
        return response.json()

    def query_node(self, level: str, keys: dict[str, str]) -> list[dict[str, Any]]:
        """C-FIND from Orthanc to the node; the answers as Orthanc decoded them (keyword → value)."""
        query = self.post("/modalities/pacs/query", {"Level": level, "Query": keys})
        answers = self.get(f"/queries/{query['ID']}/answers")
        return [self.get(f"/queries/{query['ID']}/answers/{answer}/content?simplify") for answer in answers]

    def study_instance_uids(self) -> set[str]:
        return {self.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"] for study in self.get("/studies")}

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def log(self) -> str:
        path = self.workdir / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""
