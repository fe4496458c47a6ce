"""C-STORE answers with the PS3.4 status that fits, and hostile input never reaches a path or key.

The tests share one node (module_node): each looks at what it adds to it (objects, instances, dead letters)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage

from tests.factory import encode_dataset, make_image
from tests.node import Node, wait_until
from tests.peers import StoreClient, send_raw_c_store
from tests.stored import stored_object

HOSTILE_UIDS = ["../../x", "1.2." + "3" * 70, "", "1.2.3/../../etc", "1.2.3\\..\\x"]


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def objects_of(node: Node) -> set[Path]:
    return set((node.data_dir / "objects").rglob("*.dcm"))


def instances_in(node: Node) -> int:
    return int(node.settled_status()["counts"]["instances"])


def test_a_valid_instance_gets_success(module_node: Node) -> None:
    held = instances_in(module_node)
    with StoreClient(module_node.dicom_port) as client:
        assert client.store(make_image()) == 0x0000
    module_node.wait_indexed(held + 1)


def test_dataset_uids_that_differ_from_the_command_get_a900(module_node: Node) -> None:
    dataset = make_image(CTImageStorage)
    before = objects_of(module_node)
    with StoreClient(module_node.dicom_port) as client:
        other_instance = send_raw_c_store(client.association, CTImageStorage, "1.2.3.4",
                                          encode_dataset(dataset))
        other_class = send_raw_c_store(client.association, MRImageStorage, dataset.SOPInstanceUID,
                                       encode_dataset(dataset))
    assert (other_instance, other_class) == (0xA900, 0xA900)
    assert objects_of(module_node) == before


def test_a_dataset_that_cannot_be_parsed_gets_c000(module_node: Node) -> None:
    dataset = make_image()
    before = objects_of(module_node)
    truncated = b"\x08\x00\x16\x00UI\xff\xff" + b"1.2" * 3  # an element longer than the data
    not_deflated = b"this is not a deflate stream" * 4
    with StoreClient(module_node.dicom_port) as client:
        statuses = [
            send_raw_c_store(client.association, CTImageStorage, dataset.SOPInstanceUID, truncated),
            send_raw_c_store(client.association, CTImageStorage, dataset.SOPInstanceUID, not_deflated,
                             DeflatedExplicitVRLittleEndian),
        ]
    assert statuses == [0xC000, 0xC000]
    assert objects_of(module_node) == before


@pytest.mark.parametrize("where", ["sop_instance", "study", "series"])
def test_hostile_uids_in_the_dataset_are_refused_and_nothing_is_written(module_node: Node, where: str) -> None:
    workdir = module_node.workdir  # the node's data directory and logs
    before = files_under(workdir)
    statuses = []
    with StoreClient(module_node.dicom_port) as client:
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
    created = files_under(workdir) - before
    objects = module_node.data_dir / "objects"
    assert not [path for path in created if objects in path.parents], "something was stored"
    outside_data = [path for path in created if module_node.data_dir not in path.parents]
    assert all(path.suffix == ".log" for path in outside_data), outside_data
    assert not (workdir / "x").exists() and not (workdir.parent / "x").exists()


def test_a_hostile_uid_in_the_command_only_is_refused(module_node: Node) -> None:
    dataset = make_image()
    before = objects_of(module_node)
    with StoreClient(module_node.dicom_port) as client:
        status = send_raw_c_store(client.association, CTImageStorage, "../../x", encode_dataset(dataset))
    assert status == 0xA900
    assert objects_of(module_node) == before


def test_a_command_uid_over_64_characters_aborts_the_association_and_the_next_one_works(
    module_node: Node,
) -> None:
    dataset = make_image()
    before = objects_of(module_node)
    with StoreClient(module_node.dicom_port) as client:
        status = send_raw_c_store(client.association, CTImageStorage, "1.2." + "3" * 70, encode_dataset(dataset))
    assert status is None  # an undecodable DIMSE command: A-ABORT, not silence
    assert objects_of(module_node) == before
    with StoreClient(module_node.dicom_port) as client:
        assert client.store(make_image()) == 0x0000


def test_same_uid_with_other_content_keeps_the_first_and_audits_the_conflict(module_node: Node) -> None:
    first = make_image(sop_uid="1.2.826.0.1.3680043.10.99.1", patient_name="First^Version")
    second = make_image(sop_uid="1.2.826.0.1.3680043.10.99.1", study_uid=first.StudyInstanceUID,
                        series_uid=first.SeriesInstanceUID, patient_name="Second^Version")
    held = instances_in(module_node)
    with StoreClient(module_node.dicom_port) as client:
        assert client.store(first) == 0x0000
        assert client.store(second) == 0x0000
    module_node.wait_indexed(held + 1)
    assert b"First^Version" in stored_object(module_node.data_dir, first.SOPInstanceUID).read_bytes()

    def audited() -> bool:
        with sqlite3.connect(module_node.data_dir / "index.sqlite3") as connection:
            return connection.execute(
                "SELECT count(*) FROM audit_events WHERE action = 'duplicate_conflict'").fetchone()[0] == 1

    wait_until(audited, 20, "the duplicate conflict in the audit log")


def with_vr(encoded: bytes, tag_and_vr: bytes, vr: bytes) -> bytes:
    """The encoded dataset with one element's VR replaced (Explicit VR Little Endian)."""
    at = encoded.index(tag_and_vr)
    return encoded[:at + 4] + vr + encoded[at + 6:]


def test_an_unknown_vr_is_refused_before_the_uids_and_dead_lettered_after_them(module_node: Node) -> None:
    """The SCP reads only up to the UIDs (PERFORMANCE.md: decode less): a VR that does not exist before them makes
    the dataset unreadable (0xC000, nothing written); after them the bytes are stored as received and the indexer,
    which cannot parse them, lists the instance as a dead letter while the queue keeps flowing."""
    early, late, fine = make_image(charset="ISO_IR 100"), make_image(), make_image()
    before, status_before = objects_of(module_node), module_node.settled_status()
    with StoreClient(module_node.dicom_port) as client:
        refused = send_raw_c_store(client.association, CTImageStorage, early.SOPInstanceUID,
                                   with_vr(encode_dataset(early), b"\x08\x00\x05\x00CS", b"ZZ"))
        assert objects_of(module_node) == before
        stored = send_raw_c_store(client.association, CTImageStorage, late.SOPInstanceUID,
                                  with_vr(encode_dataset(late), b"\x10\x00\x10\x00PN", b"ZZ"))
        assert client.store(fine) == 0x0000
    assert (refused, stored) == (0xC000, 0x0000)
    dead_letters = status_before["queue"]["dead_letter"] + 1
    wait_until(lambda: module_node.status()["queue"]["dead_letter"] == dead_letters, 30, "the dead letter")
    module_node.wait_indexed(status_before["counts"]["instances"] + 1)
