"""Storage limits: a full node answers C-STORE with 0xA700 (as storescu shows it) and STOW-RS with 507, audits
storage_full, still accepts identical re-sends, and accepts again once the limit is raised."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from requests import HTTPError

from tests.factory import make_image, save
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool


def storescu_verbose(node: Node, path: Path) -> str:
    result = subprocess.run([dcmtk_tool("storescu"), "-v", "-aet", "MODALITY", "-aec", "PACS", "127.0.0.1",
                             str(node.dicom_port), str(path)], capture_output=True, text=True, timeout=60,
                            env=dcmtk_env())
    return result.stdout + result.stderr


def patch_config(node: Node, **values: Any) -> None:
    response = httpx.patch(f"{node.api}/api/config", json=values, timeout=10)
    assert response.status_code == 200, response.text


def new_file(folder: Path) -> Path:
    dataset = make_image(patient_id="FULL-1")
    return save(dataset, folder / f"{dataset.SOPInstanceUID}.dcm")


def for_stow(dataset: Dataset) -> Dataset:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def audited(node: Node, service: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{node.api}/api/audit", params={"action": "storage_full"}, timeout=10).json()
    return [event for event in answer["events"] if event["details"]["service"] == service]


def test_a_full_node_refuses_c_store_and_stow_and_audits_it(embedded_node: Node, tmp_path: Path) -> None:
    node = embedded_node
    first = [new_file(tmp_path) for _ in range(3)]
    for path in first:
        assert "Received Store Response (Success)" in storescu_verbose(node, path)
    node.wait_indexed(3)

    patch_config(node, storage_max_instances=3)

    def refusal() -> Path | None:
        path = new_file(tmp_path)
        output = storescu_verbose(node, path)
        return path if "Received Store Response (Refused: OutOfResources)" in output else None

    # The SCP learns the totals in the background: sends in the meantime may still be stored (a quota).
    refused = wait_until(refusal, 60, "C-STORE refused with 0xA700 as the node is full", interval=0.5)
    assert not list((node.data_dir / "objects").rglob(f"*{refused.stem}.dcm"))  # nothing refused is written
    assert httpx.get(f"{node.api}/api/instances/{refused.stem}", timeout=10).status_code == 404
    # An identical re-send stores nothing new: still a success.
    assert "Received Store Response (Success)" in storescu_verbose(node, first[0])

    client = DICOMwebClient(f"{node.api}/dicomweb")
    with pytest.raises(HTTPError) as failure:
        client.store_instances([for_stow(make_image(patient_id="FULL-1"))])
    assert failure.value.response.status_code == 507
    body = failure.value.response.json()
    assert [item["00081197"]["Value"] for item in body["00081198"]["Value"]] == [[0xA700]]

    wait_until(lambda: audited(node, "c_store") and audited(node, "stow"), 30, "storage_full audit rows")
    [c_store] = audited(node, "c_store")[:1]
    assert c_store["outcome"] == "refused" and c_store["remote_aet"] == "MODALITY"
    assert c_store["details"]["limit"] == "instances" and c_store["details"]["status"] == "0xA700"
    assert audited(node, "stow")[0]["details"]["limit"] == ["instances"]
    held = len(list((node.data_dir / "objects").rglob("*.dcm")))
    assert node.wait_indexed(held)["counts"]["instances"] >= 3

    # A byte limit above what is held: accepted again.
    patch_config(node, storage_max_instances=None, storage_max_bytes=10**9)
    wait_until(lambda: "Received Store Response (Success)" in storescu_verbose(node, new_file(tmp_path)), 30,
               "C-STORE accepted again")
    stored = client.store_instances([for_stow(make_image(patient_id="FULL-1"))])
    assert len(stored.ReferencedSOPSequence) == 1
    held = node.status()["storage"]["bytes"]
    patch_config(node, storage_max_bytes=held + 100)  # less than one more image
    wait_until(lambda: "Refused: OutOfResources" in storescu_verbose(node, new_file(tmp_path)), 60,
               "C-STORE refused by the byte limit", interval=0.5)
    wait_until(lambda: any(event["details"]["limit"] == "bytes" for event in audited(node, "c_store")), 30,
               "a storage_full row for the byte limit")
