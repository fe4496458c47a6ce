"""The sender sends objects as stored when the destination accepts that syntax, and decodes them otherwise."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
from shared.dicom.part10 import encode_part10, skip_file_meta
from shared.jobs import Destination, Item
from shared.storage import direct_io
from shared.storage.filesystem import FilesystemObjectStore
from tests.factory import COMPRESSED_SAMPLES, dataset_bytes_of_file, encode_dataset, make_image
from tests.node import free_port


class Destination_:
    """A pynetdicom storage SCP that accepts only the syntaxes given, and keeps what it receives."""

    def __init__(self, syntaxes: list[str], maximum_pdu_size: int = 16382) -> None:
        self.received: dict[str, tuple[str, Dataset]] = {}
        ae = AE(ae_title="DEST")
        ae.maximum_pdu_size = maximum_pdu_size
        for sample in [CTImageStorage, *{str(pydicom.dcmread(s).SOPClassUID) for s in COMPRESSED_SAMPLES}]:
            ae.add_supported_context(sample, syntaxes)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def __enter__(self) -> "Destination_":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()

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


@dataclass
class Sent:
    outcomes: list[tuple[str, str]]
    reading_itself: bool  # the sender still reads its responses from the socket (shared.dicom.own_responses)
    alive: bool


def sending(store: FilesystemObjectStore, items: list[Item], port: int, tmp_path: Path) -> Sent:
    sender = StoreSender(store, Destination("DEST", "127.0.0.1", port, "PACS"), items, tmp_path)
    try:
        outcomes = [(outcome, reason) for _, outcome, reason in sender.send_each(enumerate(items))]
        return Sent(outcomes, sender._responses is not None and sender._responses.holding, sender.alive)
    finally:
        sender.close()


def send_all(store: FilesystemObjectStore, items: list[Item], port: int, tmp_path: Path) -> list[tuple[str, str]]:
    return sending(store, items, port, tmp_path).outcomes


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


class Answering(Destination_):
    """A destination that answers each SOP Instance UID as told: a status with an Error Comment, or an abort."""

    def __init__(self, refused: dict[str, int], aborts_at: str | None = None) -> None:
        self.refused, self.aborts_at = refused, aborts_at
        super().__init__([ExplicitVRLittleEndian])

    def _store(self, event: evt.Event) -> int | Dataset:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == self.aborts_at:
            event.assoc.abort()
            return 0x0000
        if uid in self.refused:
            status = Dataset()
            status.Status = self.refused[uid]
            status.ErrorComment = "refused by the test"
            return status
        return super()._store(event)


def test_a_response_with_error_details_counts_and_later_responses_are_still_read(
        store: FilesystemObjectStore, tmp_path: Path) -> None:
    """The sender reads plain responses itself; one with an Error Comment goes through pynetdicom, after which the
    sender reads the following ones itself again."""
    items = [stored(store, make_image(), ExplicitVRLittleEndian) for _ in range(4)]
    with Answering({items[1].sop_instance_uid: 0xA700}) as destination:
        sent = sending(store, items, destination.port, tmp_path)
    assert sent.outcomes == [(SendOutcome.COMPLETED, ""), (SendOutcome.FAILED, "destination answered 0xA700"),
                             (SendOutcome.COMPLETED, ""), (SendOutcome.COMPLETED, "")]
    assert sent.reading_itself
    assert set(destination.received) == {items[i].sop_instance_uid for i in (0, 2, 3)}


def test_a_destination_that_aborts_fails_the_suboperation_and_the_rest_fail_without_a_connection(
        store: FilesystemObjectStore, tmp_path: Path) -> None:
    items = [stored(store, make_image(), ExplicitVRLittleEndian) for _ in range(3)]
    with Answering({}, aborts_at=items[1].sop_instance_uid) as destination:
        sent = sending(store, items, destination.port, tmp_path)
    assert sent.outcomes == [(SendOutcome.COMPLETED, ""), (SendOutcome.FAILED, "no response from the destination"),
                             (SendOutcome.FAILED, "association with the destination lost")]
    assert not sent.alive


class RawDestination(Destination_):
    """Keeps each data set as the bytes received, and takes PDUs of at most 4 KB (many fragments per object)."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}
        super().__init__([ExplicitVRLittleEndian], maximum_pdu_size=4096)

    def _store(self, event: evt.Event) -> int:
        self.raw[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000


def assert_sent_byte_for_byte(store: FilesystemObjectStore, items: list[Item], tmp_path: Path) -> None:
    with RawDestination() as destination:
        assert send_all(store, items, destination.port, tmp_path) == [(SendOutcome.COMPLETED, "")] * len(items)
    for item in items:
        with open(store.root / item.object_key, "rb") as stream:
            skip_file_meta(stream)
            assert destination.raw[item.sop_instance_uid] == stream.read()


def test_objects_arrive_byte_for_byte_whether_read_ahead_or_streamed_at_their_turn(
        store: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.mover import read_ahead

    monkeypatch.setattr(read_ahead, "PREPARED_MAX_BYTES", 20_000)  # 16x16 and 64x64 are read ahead, 128x128 is not
    items = [stored(store, make_image(rows=side, columns=side), ExplicitVRLittleEndian)
             for side in (16, 128, 64, 128, 128, 16, 64)]
    assert_sent_byte_for_byte(store, items, tmp_path)


def test_large_objects_read_ahead_around_the_page_cache_arrive_byte_for_byte(
        store: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the local store wrote them (shared.storage.direct_io): no page-cache pages spent on bytes read once."""
    reads: list[int] = []
    real = direct_io.read_head

    def noting(fd: int, length: int):  # type: ignore[no-untyped-def]
        reads.append(length)
        return real(fd, length)

    monkeypatch.setattr(direct_io, "read_head", noting)
    items = [stored(store, make_image(rows=side, columns=side), ExplicitVRLittleEndian) for side in (256, 16, 256)]
    assert_sent_byte_for_byte(store, items, tmp_path)
    assert len(reads) == 2  # the two large ones; the small one read as usual


def test_objects_whose_buffers_are_too_large_to_keep_arrive_byte_for_byte(
        store: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Such a buffer (an object of 4 to 8 MB: a digital radiograph) is unmapped once its request is framed."""
    monkeypatch.setattr(direct_io, "_KEPT_MAX_BYTES", 64 << 10)  # as if the 128 KB objects were such objects
    items = [stored(store, make_image(rows=256, columns=256), ExplicitVRLittleEndian) for _ in range(4)]
    assert_sent_byte_for_byte(store, items, tmp_path)


def test_an_object_missing_from_the_store_fails_alone(store: FilesystemObjectStore, tmp_path: Path) -> None:
    items = [stored(store, make_image(), ExplicitVRLittleEndian) for _ in range(3)]
    store.delete(items[1].object_key)
    with Destination_([ExplicitVRLittleEndian]) as destination:
        outcomes = send_all(store, items, destination.port, tmp_path)
    assert outcomes == [(SendOutcome.COMPLETED, ""), (SendOutcome.FAILED, "object store unavailable"),
                        (SendOutcome.COMPLETED, "")]
