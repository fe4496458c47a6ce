"""A modality pushes to `pacs serve` on the embedded default; everything acknowledged is stored and indexed.

The tests share one node (module_node), each counting what it adds to it."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from services.scp.spooling import SPOOL_ABOVE_BYTES
from tests.factory import dataset_start, make_image, save, study_set
from tests.node import Node, wait_until
from tests.association_checks import storescu_answer
from tests.peers import StoreClient, echoscu, push_files, received_by_storescp, storescu
from tests.stored import stored_object


def stored_objects(node: Node) -> list[Path]:
    return [path for path in (node.data_dir / "objects").rglob("*.dcm")]


def test_echoscu_gets_success(module_node: Node) -> None:
    result = echoscu(module_node.dicom_port)
    assert result.returncode == 0, result.stderr


def test_200_instances_of_several_classes_and_syntaxes_arrive_indexed_and_byte_identical(
    module_node: Node, tmp_path: Path
) -> None:
    files = study_set(tmp_path / "study", 200)
    assert len({item.transfer_syntax for item in files}) >= 9
    before = module_node.settled_status()

    push_files(module_node.dicom_port, files)

    sent = received_by_storescp(files, tmp_path)
    status = module_node.wait_indexed(before["counts"]["instances"] + 200)
    assert status["counts"]["studies"] == before["counts"]["studies"] + 4
    assert status["queue"]["dead_letter"] == before["queue"]["dead_letter"] == 0
    for item in files:
        info = module_node.get(f"/api/instances/{item.sop_instance_uid}").json()
        assert info["transfer_syntax"] == item.transfer_syntax
        assert info["size"] == info["stored_size"]
        assert (info["remote_aet"], info["called_aet"], info["remote_ip"]) == ("STORESCU", "PACS", "127.0.0.1")
        assert info["received_at"].endswith("Z") and info["series_last_update"].endswith("Z")
        stored = stored_object(module_node.data_dir, item.sop_instance_uid).read_bytes()
        assert stored[:128] == b"\x00" * 128 and stored[128:132] == b"DICM"
        assert stored[dataset_start(stored):] == sent[item.sop_instance_uid], item.transfer_syntax


def test_an_instance_larger_than_the_spool_limit_is_stored_from_disk_byte_identical(
    module_node: Node, tmp_path: Path
) -> None:
    """The SCP spools a data set over SPOOL_ABOVE_BYTES to an anonymous file and streams it into the store."""
    image = make_image(rows=3072, columns=3072)  # 18 MiB of pixel data
    path = save(image, tmp_path / "large.dcm")
    assert path.stat().st_size > SPOOL_ABOVE_BYTES
    held = module_node.settled_status()["counts"]["instances"]
    for _ in range(2):  # the second send is an identical re-send: Success, nothing new
        assert storescu_answer(module_node.dicom_port, path) == "Success"

    status = module_node.wait_indexed(held + 1)
    assert status["counts"]["instances"] == held + 1 and status["queue"]["dead_letter"] == 0
    info = module_node.get(f"/api/instances/{image.SOPInstanceUID}").json()
    assert info["size"] == info["stored_size"] > SPOOL_ABOVE_BYTES
    stored = stored_object(module_node.data_dir, image.SOPInstanceUID)
    stored_bytes, sent_bytes = stored.read_bytes(), path.read_bytes()
    assert stored_bytes[dataset_start(stored_bytes):] == sent_bytes[dataset_start(sent_bytes):]
    assert dcmread(stored).PixelData == image.PixelData
    assert [p for p in (module_node.data_dir / "spool").rglob("*") if p.is_file()] == []


def test_ct_sized_slices_on_one_association_arrive_indexed_and_byte_identical(module_node: Node, tmp_path: Path) -> None:
    """A CT slice's file is written after its Success (shared.storage.filesystem.stage_new): every slice is there,
    complete, under its key, with the size and SHA-256 the index recorded."""
    study, series = generate_uid(), generate_uid()
    images = [make_image(study_uid=study, series_uid=series, instance_number=number + 1, rows=256, columns=256)
              for number in range(30)]  # 128 KiB of pixels each
    paths = [save(image, tmp_path / f"slice-{number}.dcm") for number, image in enumerate(images)]
    held = module_node.settled_status()["counts"]["instances"]

    result = storescu(module_node.dicom_port, paths)  # one association

    assert result.returncode == 0, result.stdout + result.stderr
    status = module_node.wait_indexed(held + 30)
    assert status["counts"]["instances"] == held + 30 and status["queue"]["dead_letter"] == 0
    for image, path in zip(images, paths):
        info = module_node.get(f"/api/instances/{image.SOPInstanceUID}").json()
        stored = stored_object(module_node.data_dir, image.SOPInstanceUID).read_bytes()
        assert info["size"] == info["stored_size"] == len(stored)
        assert info["sha256"] == hashlib.sha256(stored).hexdigest()
        sent = path.read_bytes()
        assert stored[dataset_start(stored):] == sent[dataset_start(sent):]


def test_resending_the_same_50_instances_changes_nothing(module_node: Node, tmp_path: Path) -> None:
    files = study_set(tmp_path / "study", 50)
    held = module_node.settled_status()["counts"]["instances"]
    push_files(module_node.dicom_port, files)
    module_node.wait_indexed(held + 50)
    objects_before = {path: path.stat().st_mtime_ns for path in stored_objects(module_node)}

    push_files(module_node.dicom_port, files)  # every C-STORE must answer Success again

    status = module_node.wait_indexed(held + 50)
    assert status["counts"]["instances"] == held + 50
    assert {path: path.stat().st_mtime_ns for path in stored_objects(module_node)} == objects_before


def test_instance_metadata_answers_404_for_an_unknown_uid_and_422_for_a_malformed_one(module_node: Node) -> None:
    assert module_node.get("/api/instances/1.2.3.4.5").status_code == 404
    assert module_node.get("/api/instances/not-a-uid").status_code == 422
    assert module_node.get("/api/instances/1." + "2" * 70).status_code == 422


def test_instances_are_gathered_for_indexing_and_sent_when_their_association_ends(tmp_path: Path) -> None:
    """The SCP gathers stored instances into one indexing task for up to index_batch_wait_seconds (here with no
    pause short enough to send it earlier); the end of the association that stored them sends them at once."""
    node = Node(tmp_path, {"PACS_INDEX_BATCH_WAIT_SECONDS": "10", "PACS_INDEX_BATCH_QUIET_SECONDS": "10",
                           "PACS_SWEEP_GRACE_SECONDS": "60"})
    node.service("serve")
    with node.running():
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image()) == 0x0000
            time.sleep(1.5)
            status = node.status()
            assert (status["counts"]["instances"], status["queue"]["pending"]) == (0, 1)  # still gathering
        node.wait_indexed(1, timeout=5)  # well before the 10 s wait ends


def test_the_scp_and_indexer_processes_settle_their_collector_once_started(module_node: Node) -> None:
    """shared.collector: each SCP process and the indexer leave what they built at start-up out of the collector's
    walks (the indexer spent ~16 % of its CPU in them)."""
    def settled_services() -> set[str] | None:
        lines = [line for line in module_node.logs().splitlines() if "collector.settled frozen=" in line]
        services = {line.split()[3] for line in lines}
        return services if {"scp", "indexer"} <= services else None

    wait_until(settled_services, 10, "collector.settled from the SCP and the indexer")
