"""C-STORE answers with the PS3.4 status that fits, and hostile input never reaches a path or key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage

from tests.factory import encode_dataset, make_image
from tests.node import Node
from tests.peers import StoreClient, send_raw_c_store

HOSTILE_UIDS = ["../../x", "1.2." + "3" * 70, "", "1.2.3/../../etc", "1.2.3\\..\\x"]


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def test_a_valid_instance_gets_success(embedded_node: Node) -> None:
    with StoreClient(embedded_node.dicom_port) as client:
        assert client.store(make_image()) == 0x0000
    embedded_node.wait_indexed(1)


def test_dataset_uids_that_differ_from_the_command_get_a900(embedded_node: Node) -> None:
    dataset = make_image(CTImageStorage)
    with StoreClient(embedded_node.dicom_port) as client:
        other_instance = send_raw_c_store(client.association, CTImageStorage, "1.2.3.4",
                                          encode_dataset(dataset))
        other_class = send_raw_c_store(client.association, MRImageStorage, dataset.SOPInstanceUID,
                                       encode_dataset(dataset))
    assert (other_instance, other_class) == (0xA900, 0xA900)
    assert not list((embedded_node.data_dir / "objects").rglob("*.dcm"))


def test_a_dataset_that_cannot_be_parsed_gets_c000(embedded_node: Node) -> None:
    dataset = make_image()
    truncated = b"\x08\x00\x16\x00UI\xff\xff" + b"1.2" * 3  # an element longer than the data
    not_deflated = b"this is not a deflate stream" * 4
    with StoreClient(embedded_node.dicom_port) as client:
        statuses = [
            send_raw_c_store(client.association, CTImageStorage, dataset.SOPInstanceUID, truncated),
            send_raw_c_store(client.association, CTImageStorage, dataset.SOPInstanceUID, not_deflated,
                             DeflatedExplicitVRLittleEndian),
        ]
    assert statuses == [0xC000, 0xC000]
    assert not list((embedded_node.data_dir / "objects").rglob("*.dcm"))


@pytest.mark.parametrize("where", ["sop_instance", "study", "series"])
def test_hostile_uids_in_the_dataset_are_refused_and_nothing_is_written(
    embedded_node: Node, tmp_path: Path, where: str
) -> None:
    before = files_under(tmp_path)
    statuses = []
    with StoreClient(embedded_node.dicom_port) as client:
        for hostile in HOSTILE_UIDS:
            dataset = make_image()
            if where == "sop_instance":
                dataset.SOPInstanceUID = hostile
            elif where == "study":
                dataset.StudyInstanceUID = hostile
            else:
                dataset.SeriesInstanceUID = hostile
            command_uid = "1.2.3.4" if where == "sop_instance" else dataset.SOPInstanceUID
            statuses.append(send_raw_c_store(client.association, CTImageStorage, command_uid,
                                             encode_dataset(dataset, ExplicitVRLittleEndian)))
    assert statuses == [0xC001] * len(HOSTILE_UIDS)
    created = files_under(tmp_path) - before
    assert all(path.name.endswith(".log") or "index.sqlite3" in path.name for path in created), created
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_a_hostile_uid_in_the_command_only_is_refused(embedded_node: Node) -> None:
    dataset = make_image()
    with StoreClient(embedded_node.dicom_port) as client:
        status = send_raw_c_store(client.association, CTImageStorage, "../../x", encode_dataset(dataset))
    assert status == 0xA900
    assert not list((embedded_node.data_dir / "objects").rglob("*.dcm"))


def test_a_command_uid_over_64_characters_aborts_the_association_and_the_next_one_works(
    embedded_node: Node,
) -> None:
    dataset = make_image()
    with StoreClient(embedded_node.dicom_port) as client:
        status = send_raw_c_store(client.association, CTImageStorage, "1.2." + "3" * 70, encode_dataset(dataset))
    assert status is None  # an undecodable DIMSE command: A-ABORT, not silence
    assert not list((embedded_node.data_dir / "objects").rglob("*.dcm"))
    with StoreClient(embedded_node.dicom_port) as client:
        assert client.store(make_image()) == 0x0000
