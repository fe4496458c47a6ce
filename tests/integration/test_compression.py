"""Compression on ingest, through the real protocol: storescu pushes uncompressed CT images to a node that stores
them as JPEG-LS Lossless; a workstation moves them to a dcmtk storescp that accepts only uncompressed syntaxes and
receives the original pixel data; re-sends are identical, before and after the setting changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from tests.destinations import StoreScp
from tests.factory import SampleFile, make_image, save
from tests.integration.test_move import movescu, register
from tests.integration.test_storage_layouts import patch_config, push
from tests.node import Node, wait_until
from tests.peers import push_files
from tests.stored import stored_object

WORKSTATION = "WORKSTATION"


def ct_slice(study: str, series: str, number: int) -> Dataset:
    """A 12-bit 128x128 CT-like slice: a disc whose size changes with the slice number, on a dark field."""
    dataset = make_image(CTImageStorage, study, series, patient_id="P-JLS", instance_number=number,
                         rows=128, columns=128)
    y, x = numpy.mgrid[0:128, 0:128]
    dataset.PixelData = ((numpy.hypot(y - 64, x - 64) < 20 + number) * 1000 + (x % 7)).astype("<u2").tobytes()
    return dataset


@pytest.fixture
def compressing_node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, {"PACS_INGEST_COMPRESSION": "jpeg_ls_lossless"})
    node.service("serve")
    with node.running():
        yield node


def conflicts_audited(node: Node) -> int:
    events = httpx.get(f"{node.api}/api/audit", params={"action": "duplicate_conflict"}, timeout=10).json()
    return len(events["events"])


def test_instances_are_stored_as_jpeg_ls_and_moved_back_with_their_original_pixels(
    compressing_node: Node, tmp_path: Path
) -> None:
    node = compressing_node
    study, series = generate_uid(), generate_uid()
    slices = [ct_slice(study, series, number) for number in range(1, 5)]
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), ExplicitVRLittleEndian, ds.SOPInstanceUID)
             for ds in slices]
    push_files(node.dicom_port, files)
    node.wait_indexed(4)

    for original, sent in zip(slices, files):
        info = node.get(f"/api/instances/{original.SOPInstanceUID}").json()
        assert info["transfer_syntax"] == JPEGLSLossless
        assert info["size"] == info["stored_size"] < sent.path.stat().st_size / 2
        stored = pydicom.dcmread(stored_object(node.data_dir, original.SOPInstanceUID))
        assert stored.file_meta.TransferSyntaxUID == JPEGLSLossless
        assert stored.SOPInstanceUID == original.SOPInstanceUID  # same instance, other encoding
        assert stored.pixel_array.tobytes() == original.PixelData

    destination = StoreScp(tmp_path / "dest", accept_compressed=False)  # uncompressed only: the mover decodes
    try:
        register(node, "workstation", WORKSTATION, 104, ["echo", "find", "move"])
        register(node, "destination", destination.ae_title, destination.port, ["store"])
        result = movescu(node, destination.ae_title, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
        assert "Received Final Move Response (Success)" in result.stdout + result.stderr, result.stdout + result.stderr
    finally:
        destination.stop()
    received = {path.name.split(".", 1)[1]: pydicom.dcmread(path) for path in destination.out.iterdir()}
    assert set(received) == {ds.SOPInstanceUID for ds in slices}
    for original in slices:
        moved = received[original.SOPInstanceUID]
        assert moved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert moved.PixelData == original.PixelData


def test_identical_resends_change_nothing_before_and_after_compression_is_turned_off(
    compressing_node: Node, tmp_path: Path
) -> None:
    node = compressing_node
    study, series = generate_uid(), generate_uid()
    first = ct_slice(study, series, 1)
    push(node, first, tmp_path / "first")
    node.wait_indexed(1)
    stored_path = stored_object(node.data_dir, first.SOPInstanceUID)
    stored_bytes = stored_path.read_bytes()
    assert pydicom.dcmread(stored_path).file_meta.TransferSyntaxUID == JPEGLSLossless

    push(node, first, tmp_path / "again")  # compresses to the same bytes: identical
    patch_config(node, ingest_compression="none")

    def stored_uncompressed() -> bool:
        probe = ct_slice(study, series, 9)
        push(node, probe, tmp_path / f"probe-{probe.SOPInstanceUID}")
        return bool(pydicom.dcmread(stored_object(node.data_dir, probe.SOPInstanceUID)).file_meta
                    .TransferSyntaxUID == ExplicitVRLittleEndian)

    wait_until(stored_uncompressed, 30, "the node to store as received", interval=0.2)
    push(node, first, tmp_path / "after")  # now received as is, but the stored object is the same instance
    counted = node.status()["counts"]["instances"]
    node.wait_indexed(counted)
    assert stored_path.read_bytes() == stored_bytes
    assert conflicts_audited(node) == 0

    changed = ct_slice(study, series, 1)
    changed.SOPInstanceUID = first.SOPInstanceUID
    changed.PatientID = "P-OTHER"  # other content under the same UID: a real conflict is still audited
    push(node, changed, tmp_path / "changed")
    wait_until(lambda: conflicts_audited(node) == 1, 30, "the duplicate_conflict audit event")
    assert stored_path.read_bytes() == stored_bytes
