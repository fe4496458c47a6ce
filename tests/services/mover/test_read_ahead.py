"""The objects of a retrieval are read ahead of their turn, in order, a bounded number at a time, in a thread of
their own; what was read ahead of a stop is given back."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from services.mover import read_ahead
from services.mover.read_ahead import NOT_READ, Loaded, ReadAhead
from shared.dicom.part10 import encode_part10, skip_file_meta
from shared.jobs import Item
from shared.storage import ObjectNotFound, direct_io
from shared.storage.filesystem import FilesystemObjectStore
from tests.factory import encode_dataset, make_image

WAIT_SECONDS = 10.0


class CountingStore(FilesystemObjectStore):
    """A local store that counts the objects opened, and can hold the opening of one until released."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []
        self.held_key: str | None = None
        self.release_held = threading.Event()

    def open(self, key: str) -> BinaryIO:
        self.opened.append(key)
        if key == self.held_key:
            assert self.release_held.wait(WAIT_SECONDS)
        return super().open(key)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


def stored(store: FilesystemObjectStore, side: int = 16) -> Item:
    dataset = make_image(rows=side, columns=side)
    part10 = encode_part10(encode_dataset(dataset, ExplicitVRLittleEndian), dataset.SOPClassUID,
                           dataset.SOPInstanceUID, ExplicitVRLittleEndian)
    key = f"1.2/1.3/{dataset.SOPInstanceUID}.dcm"
    store.put_new(key, part10, hashlib.sha256(part10).hexdigest())
    return Item(dataset.SOPInstanceUID, dataset.SOPClassUID, ExplicitVRLittleEndian, key)


def data_set_of(store: FilesystemObjectStore, item: Item) -> bytes:
    with open(store.root / item.object_key, "rb") as stream:
        skip_file_meta(stream)
        return stream.read()


def reading(store: FilesystemObjectStore, items: list[Item],
            wanted: Callable[[Item], bool] = lambda _item: True) -> ReadAhead[tuple[int, Item]]:
    return ReadAhead(store, enumerate(items), lambda entry: entry[1], wanted)


def taken_all(ahead: ReadAhead[tuple[int, Item]]) -> Iterator[tuple[tuple[int, Item], Loaded]]:
    while (taken := ahead.take()) is not None:
        yield taken


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "not within the wait"
        time.sleep(0.005)


def test_each_object_is_handed_out_in_order_with_its_data_set_byte_for_byte(store: CountingStore) -> None:
    items = [stored(store, side) for side in (16, 256, 64, 256, 16)]  # 256x256: read around the page cache
    ahead = reading(store, items)
    try:
        handed = [(position, bytes(loaded.data_set or b"")) for (position, _item), loaded in taken_all(ahead)]
    finally:
        ahead.close()
    assert handed == [(position, data_set_of(store, item)) for position, item in enumerate(items)]


def test_objects_too_large_to_hold_and_objects_not_wanted_are_not_read(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_ahead, "PREPARED_MAX_BYTES", 20_000)
    small, large, unwanted = stored(store, 16), stored(store, 128), stored(store, 16)
    ahead = reading(store, [small, large, unwanted], wanted=lambda item: item is not unwanted)
    try:
        loaded = [loaded for _entry, loaded in taken_all(ahead)]
    finally:
        ahead.close()
    assert loaded[0].data_set is not None
    assert loaded[1] is NOT_READ and loaded[2] is NOT_READ  # streamed (or decoded) by the sender at their turn
    assert unwanted.object_key not in store.opened


def test_a_missing_object_is_an_error_of_its_own_and_the_others_are_read(store: CountingStore) -> None:
    items = [stored(store) for _ in range(3)]
    store.delete(items[1].object_key)
    ahead = reading(store, items)
    try:
        loaded = [loaded for _entry, loaded in taken_all(ahead)]
    finally:
        ahead.close()
    assert isinstance(loaded[1].error, ObjectNotFound)
    assert loaded[0].data_set is not None and loaded[2].data_set is not None


def test_at_most_a_few_objects_are_read_ahead_of_the_sender(store: CountingStore) -> None:
    items = [stored(store) for _ in range(10)]
    ahead = reading(store, items)
    try:
        eventually(lambda: len(store.opened) == read_ahead.READ_AHEAD_ITEMS)
        time.sleep(0.2)
        assert len(store.opened) == read_ahead.READ_AHEAD_ITEMS  # and no more while none is taken
        assert ahead.take() is not None
        eventually(lambda: len(store.opened) == read_ahead.READ_AHEAD_ITEMS + 1)
    finally:
        ahead.close()


def test_the_bytes_held_ahead_are_bounded_too(store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_ahead, "READ_AHEAD_BYTES", 1000)  # less than one object: one at a time
    items = [stored(store) for _ in range(5)]
    ahead = reading(store, items)
    try:
        eventually(lambda: len(store.opened) == 1)
        time.sleep(0.2)
        assert len(store.opened) == 1
    finally:
        ahead.close()


def test_an_object_slow_to_read_does_not_hold_back_the_one_before_it(store: CountingStore) -> None:
    items = [stored(store) for _ in range(3)]
    store.held_key = items[1].object_key
    ahead = reading(store, items)
    try:
        first = ahead.take()  # while the second object's opening is held
        assert first is not None and first[0][0] == 0
        store.release_held.set()
        assert [position for (position, _item), _loaded in taken_all(ahead)] == [1, 2]
    finally:
        store.release_held.set()
        ahead.close()


def test_an_error_taking_the_entries_reaches_the_sender(store: CountingStore) -> None:
    item = stored(store)

    def entries() -> Iterator[tuple[int, Item]]:
        yield 0, item
        raise RuntimeError("the index went away")

    ahead: ReadAhead[tuple[int, Item]] = ReadAhead(store, entries(), lambda entry: entry[1], lambda _item: True)
    try:
        assert ahead.take() is not None
        with pytest.raises(RuntimeError, match="the index went away"):
            ahead.take()
    finally:
        ahead.close()


def test_closing_gives_back_what_was_read_and_ends_the_thread(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    given_back: list[str] = []

    def load(_store: object, item: Item) -> Loaded:
        return Loaded(b"data set", give_back=lambda: given_back.append(item.sop_instance_uid))

    monkeypatch.setattr(read_ahead, "load", load)
    items = [stored(store) for _ in range(10)]
    ahead = reading(store, items)
    eventually(lambda: len(ahead._ready) == read_ahead.READ_AHEAD_ITEMS)
    ahead.close()
    assert sorted(given_back) == sorted(item.sop_instance_uid for item in items[:read_ahead.READ_AHEAD_ITEMS])
    assert not ahead._thread.is_alive()
    assert ahead.take() is None


class RemoteStore(FilesystemObjectStore):
    """A store whose objects come as streams of unknown length (as from S3), not as local files."""

    def open(self, key: str) -> BinaryIO:
        with super().open(key) as stream:
            return io.BytesIO(stream.read())


def test_objects_of_a_remote_store_are_read_whole_unless_too_large_to_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_ahead, "PREPARED_MAX_BYTES", 20_000)
    store = RemoteStore(tmp_path / "remote")
    small, large = stored(store, 16), stored(store, 128)
    ahead = reading(store, [small, large])
    try:
        loaded = [loaded for _entry, loaded in taken_all(ahead)]
    finally:
        ahead.close()
    assert bytes(loaded[0].data_set or b"") == data_set_of(store, small)
    assert loaded[1] is NOT_READ


def test_a_buffer_given_back_is_not_held_by_the_data_set_read_into_it(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffer too large to keep is unmapped when given back, which fails while a view of it is alive."""
    monkeypatch.setattr(direct_io, "_KEPT_MAX_BYTES", 64 << 10)  # the 128 KB objects' buffers are not kept
    items = [stored(store, 256) for _ in range(3)]
    ahead = reading(store, items)
    try:
        for (_position, item), loaded in taken_all(ahead):
            assert bytes(loaded.data_set or b"") == data_set_of(store, item)
            loaded.release()
    finally:
        ahead.close()
