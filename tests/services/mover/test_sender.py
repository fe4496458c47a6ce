"""The sender sends objects as stored when the destination accepts that syntax, and decodes them otherwise."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt

from services.mover.sender import SendOutcome, StoreSender
from shared.dicom.part10 import encode_part10
from shared.jobs import Destination, Item
from shared.storage.filesystem import FilesystemObjectStore
from tests.factory import COMPRESSED_SAMPLES, dataset_bytes_of_file, encode_dataset, make_image
from tests.node import free_port


class Destination_:
    """A pynetdicom storage SCP that accepts only the syntaxes given, and keeps what it receives."""

    def __init__(self, syntaxes: list[str]) -> None:
        self.received: dict[str, tuple[str, Dataset]] = {}
        ae = AE(ae_title="DEST")
        for sample in [CTImageStorage, *{str(pydicom.dcmread(s).SOPClassUID) for s in COMPRESSED_SAMPLES}]:
            ae.add_supported_context(sample, syntaxes)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        dataset = event.dataset
        self.received[str(dataset.SOPInstanceUID)] = (str(event.context.transfer_syntax), dataset)
        return 0x0000


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects")


def stored(store: FilesystemObjectStore, dataset: Dataset, syntax: str) -> Item:
    part10 = encode_part10(encode_dataset(dataset, syntax), dataset.SOPClassUID, dataset.SOPInstanceUID, syntax)
    key = f"1.2/1.3/{dataset.SOPInstanceUID}.dcm"
    store.put_new(key, part10, hashlib.sha256(part10).hexdigest())
    return Item(dataset.SOPInstanceUID, dataset.SOPClassUID, syntax, key)


def stored_sample(store: FilesystemObjectStore, sample: Path) -> Item:
    dataset = pydicom.dcmread(sample)
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    part10 = encode_part10(dataset_bytes_of_file(sample), dataset.SOPClassUID, dataset.SOPInstanceUID, syntax)
    key = f"1.2/1.4/{dataset.SOPInstanceUID}.dcm"
    store.put_new(key, part10, hashlib.sha256(part10).hexdigest())
    return Item(dataset.SOPInstanceUID, dataset.SOPClassUID, syntax, key)


def send_all(store: FilesystemObjectStore, items: list[Item], port: int, tmp_path: Path) -> list[tuple[str, str]]:
    sender = StoreSender(store, Destination("DEST", "127.0.0.1", port, "PACS"), items, tmp_path)
    try:
        return [sender.send(item) for item in items]
    finally:
        sender.close()


@pytest.fixture
def implicit_only() -> Iterator[Destination_]:
    destination = Destination_([ImplicitVRLittleEndian])
    yield destination
    destination.server.shutdown()


def test_objects_are_sent_as_stored_when_that_syntax_is_accepted(store: FilesystemObjectStore, tmp_path: Path) -> None:
    destination = Destination_([ExplicitVRBigEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
    try:
        items = [stored(store, make_image(), syntax)
                 for syntax in (ExplicitVRBigEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)]
        assert send_all(store, items, destination.port, tmp_path) == [(SendOutcome.COMPLETED, "")] * 3
        assert [destination.received[item.sop_instance_uid][0] for item in items] == [i.transfer_syntax for i in items]
    finally:
        destination.server.shutdown()


def test_uncompressed_and_compressed_objects_are_decoded_for_a_destination_that_accepts_less(
    store: FilesystemObjectStore, implicit_only: Destination_, tmp_path: Path
) -> None:
    items = [stored(store, make_image(), syntax)
             for syntax in (ExplicitVRBigEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)]
    items += [stored_sample(store, sample) for sample in COMPRESSED_SAMPLES]
    originals = {item.sop_instance_uid: pydicom.dcmread(store.root / item.object_key) for item in items}

    outcomes = send_all(store, items, implicit_only.port, tmp_path)

    assert outcomes == [(SendOutcome.COMPLETED, "")] * len(items)
    for uid, original in originals.items():
        syntax, received = implicit_only.received[uid]
        assert syntax == ImplicitVRLittleEndian
        received.file_meta = pydicom.dataset.FileMetaDataset()
        received.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert (received.pixel_array == original.pixel_array).all(), uid  # values, whatever the byte order
        assert received.PatientName == original.PatientName


def test_an_object_that_cannot_be_decoded_fails(store: FilesystemObjectStore, implicit_only: Destination_,
                                                tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    broken = make_image()
    broken.PixelData = encapsulate([b"\xff\xd8 not a JPEG \xff\xd9"])
    broken["PixelData"].VR = "OB"
    item = stored(store, broken, "1.2.840.10008.1.2.4.50")
    [(outcome, reason)] = send_all(store, [item], implicit_only.port, tmp_path)
    assert outcome == SendOutcome.FAILED and "transcode" in reason
    assert implicit_only.received == {}
