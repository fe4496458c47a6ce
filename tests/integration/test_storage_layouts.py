"""Storage layouts and file names seen on disk after storescu pushes to `pacs serve`; hostile PatientIDs stay
inside the object folder; duplicates are still detected when the key of a new send would differ. The tests share
one node (module_node), the first one while it still has the default layout; each waits for the layout it sets."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from shared.storage.layout import patient_component
from tests.factory import make_image, save
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool
from tests.stored import stored_object

PID7 = patient_component("PID-7")  # the patient folder: a pseudonym of the PatientID


def storescu_verbose(port: int, path: Path) -> subprocess.CompletedProcess[str]:
    """storescu -v: prints the status of each C-STORE response."""
    return subprocess.run([dcmtk_tool("storescu"), "-v", "-aet", "STORESCU", "-aec", "PACS", "127.0.0.1", str(port),
                           str(path)], capture_output=True, text=True, timeout=60, env=dcmtk_env())


def patch_config(node: Node, **values: Any) -> None:
    response = httpx.patch(f"{node.api}/api/config", json=values, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture(autouse=True)
def layout_put_back(module_node: Node) -> Iterator[None]:
    """Each test starts from the node's configuration as it was: the keys it does not set have their defaults."""
    config = module_node.get("/api/config").json()
    yield
    now = module_node.get("/api/config").json()
    put_back = {key: value for key, value in config.items() if now[key] != value}
    if put_back:
        patch_config(module_node, **put_back)


def push(node: Node, dataset: Dataset, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = save(dataset, folder / f"{dataset.SOPInstanceUID}.dcm")
    result = storescu_verbose(node.dicom_port, path)
    assert result.returncode == 0 and "Received Store Response (Success)" in result.stdout + result.stderr, (
        result.stdout + result.stderr)


def relative_key(node: Node, sop_uid: str) -> str:
    return stored_object(node.data_dir, sop_uid).relative_to(node.data_dir / "objects").as_posix()


def received_day(key: str) -> bool:
    """The key starts with the UTC day of reception: today's, or yesterday's just after midnight."""
    now = datetime.now(timezone.utc)
    days = {(now - timedelta(minutes=minutes)).strftime("%Y/%m/%d") for minutes in (0, 5)}
    return key.count("/") == 3 and key[:10] in days


def key_after_change(node: Node, folder: Path, expected: Any, **image: Any) -> tuple[Dataset, str]:
    """Push new instances until one is stored under the new configuration (services apply it within 0.5 s)."""
    def attempt() -> tuple[Dataset, str] | None:
        dataset = make_image(**image)
        push(node, dataset, folder)
        key = relative_key(node, dataset.SOPInstanceUID)
        return (dataset, key) if expected(dataset, key) else None

    result: tuple[Dataset, str] = wait_until(attempt, 30, "the new storage layout", interval=0.2)
    return result


def test_each_layout_and_naming_on_disk(module_node: Node, tmp_path: Path) -> None:
    node = module_node
    first = make_image(patient_id="PID-7")
    push(node, first, tmp_path / "default")
    assert relative_key(node, first.SOPInstanceUID) == (
        f"{PID7}/{first.StudyInstanceUID}/{first.SeriesInstanceUID}/{first.SOPInstanceUID}.dcm")  # the default

    cases = {
        ("flat", "sop_uid"): lambda ds, key: key == f"{ds.SOPInstanceUID}.dcm",
        ("patient", "sop_uid"): lambda ds, key: key == f"{PID7}/{ds.SOPInstanceUID}.dcm",
        ("study", "instance_number"): lambda ds, key: key == f"{ds.StudyInstanceUID}/000042_{ds.SOPInstanceUID}.dcm",
        ("date", "sop_uid"): lambda ds, key: received_day(key) and key.endswith(f"/{ds.SOPInstanceUID}.dcm"),
        ("series", "timestamp"): lambda ds, key: (
            key.startswith(f"{PID7}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/")
            and key.endswith(f"Z_{ds.SOPInstanceUID}.dcm") and len(key.rsplit("/", 1)[1].split("_")[0]) == 22),
        ("flat", "sequence"): lambda ds, key: (key.endswith(f"_{ds.SOPInstanceUID}.dcm")
                                               and key.split("_")[0].isdigit() and len(key.split("_")[0]) == 10),
    }
    for (layout, naming), expected in cases.items():
        patch_config(node, storage_layout=layout, storage_naming=naming)
        key_after_change(node, tmp_path / f"{layout}-{naming}", expected, patient_id="PID-7", instance_number=42)
    node.wait_indexed(len(list((node.data_dir / "objects").rglob("*.dcm"))))


def test_hostile_patient_ids_become_safe_folders_inside_the_object_store(module_node: Node, tmp_path: Path) -> None:
    node = module_node
    objects = node.data_dir / "objects"
    patch_config(node, storage_layout="patient")
    hostile = ["../../escaped", "..", "a b/../c", "Müller^Änne", "/etc/passwd", ".pending", "   "]
    key_after_change(node, tmp_path / "probe", lambda ds, key: key == f"{patient_component('P-probe')}/"
                     f"{ds.SOPInstanceUID}.dcm", patient_id="P-probe")
    folders = set()
    for index, patient_id in enumerate(hostile):
        dataset = make_image(patient_id=patient_id, charset="ISO_IR 192")
        push(node, dataset, tmp_path / f"hostile-{index}")
        path = stored_object(node.data_dir, dataset.SOPInstanceUID)
        assert path.resolve().is_relative_to(objects.resolve())
        folder, name = path.relative_to(objects).parts
        assert name == f"{dataset.SOPInstanceUID}.dcm"
        assert folder == patient_component(patient_id) and ".." not in folder and " " not in folder
        folders.add(folder)
    assert len(folders) == len(hostile)  # distinct PatientIDs, distinct folders
    assert not (node.data_dir / "escaped").exists() and not (node.workdir / "escaped").exists()
    assert not any("escaped" in entry.name for entry in node.data_dir.iterdir())
    node.wait_indexed(len(list(objects.rglob("*.dcm"))))  # and every one of them is indexed


def test_a_duplicate_is_detected_when_the_layout_would_give_it_another_key(module_node: Node, tmp_path: Path) -> None:
    node = module_node
    patch_config(node, storage_layout="date", storage_naming="timestamp")
    dataset, key = key_after_change(node, tmp_path / "first", lambda ds, key: received_day(key)
                                    and key.endswith(f"Z_{ds.SOPInstanceUID}.dcm"), patient_id="P1")
    # A later day (or another layout, naming or PatientID) would give it another key: the claim keeps the first.
    patch_config(node, storage_layout="patient", storage_naming="sop_uid")
    key_after_change(node, tmp_path / "probe", lambda ds, k: k == f"{patient_component('P2')}/{ds.SOPInstanceUID}.dcm",
                     patient_id="P2")
    push(node, dataset, tmp_path / "again")  # identical: success, nothing new
    assert relative_key(node, dataset.SOPInstanceUID) == key
    dataset.PatientID = "P2"  # other content
    push(node, dataset, tmp_path / "conflict")
    assert relative_key(node, dataset.SOPInstanceUID) == key

    def conflict_audited() -> bool:
        events = httpx.get(f"{node.api}/api/audit", params={"action": "duplicate_conflict"}, timeout=10).json()
        return any(event["details"].get("sop_instance_uid") == dataset.SOPInstanceUID for event in events["events"])

    wait_until(conflict_audited, 30, "the duplicate_conflict audit event")
    info = httpx.get(f"{node.api}/api/instances/{dataset.SOPInstanceUID}", timeout=10).json()
    assert info["size"] == info["stored_size"]
