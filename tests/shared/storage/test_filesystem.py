"""FilesystemObjectStore: durable, never-overwriting objects in a local folder."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from shared.storage.base import (
    InvalidKey,
    ObjectNotFound,
    PartedData,
    PutOutcome,
    StorageUnavailable,
    StreamedData,
    validate_key,
)
from shared.spare_files import SPARE_MAX_BYTES
from shared import abandoned_files
from shared.storage.filesystem import SPARE_FOLDER, FilesystemObjectStore
from tests.stamps import require_stamps

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_put_new_creates_the_object(store: FilesystemObjectStore, root: Path) -> None:
    result = store.put_new(KEY, b"first", sha(b"first"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.CREATED, sha(b"first"))
    assert (root / KEY).read_bytes() == b"first"


def test_put_new_of_the_same_bytes_is_identical(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    result = store.put_new(KEY, b"first", sha(b"first"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.IDENTICAL, sha(b"first"))


def test_put_new_of_other_bytes_is_a_conflict_and_keeps_the_first(store: FilesystemObjectStore, root: Path) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    before = (root / KEY).stat()
    result = store.put_new(KEY, b"second", sha(b"second"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.CONFLICT, sha(b"first"))
    after = (root / KEY).stat()
    assert (root / KEY).read_bytes() == b"first"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_put_new_leaves_no_temporary_file(store: FilesystemObjectStore, root: Path) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    store.put_new(KEY, b"first", sha(b"first"))
    store.put_new(KEY, b"other", sha(b"other"))
    store.close()  # the journal's last checkpoint
    assert all_files(root) == [root / KEY]


def test_put_hint_replaces_the_object(store: FilesystemObjectStore) -> None:
    store.put_hint(".pending/1.2.3.json", b"one")
    store.put_hint(".pending/1.2.3.json", b"two")
    assert store.get(".pending/1.2.3.json") == b"two"


def test_get_open_and_stat_read_the_object(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"content", sha(b"content"))
    assert store.get(KEY) == b"content"
    with store.open(KEY) as stream:
        assert stream.read() == b"content"
    info = store.stat(KEY)
    assert info is not None and (info.key, info.size) == (KEY, 7)
    assert info.modified.utcoffset() is not None  # an aware UTC time


def test_a_missing_object_is_not_found(store: FilesystemObjectStore) -> None:
    assert store.stat(KEY) is None
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    with pytest.raises(ObjectNotFound):
        store.open(KEY)


def test_delete_removes_and_deleting_a_missing_object_is_fine(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"content", sha(b"content"))
    store.delete(KEY)
    store.delete(KEY)
    assert store.stat(KEY) is None


def test_a_deleted_hint_keeps_its_inode_for_the_next_hint(store: FilesystemObjectStore, root: Path) -> None:
    store.put_hint(".pending/1.2.3.json", b"a marker longer than the one written after it")
    inode = (root / ".pending/1.2.3.json").stat().st_ino
    store.delete_hint(".pending/1.2.3.json")
    store.delete_hint(".pending/1.2.3.json")  # a missing hint is fine
    assert store.stat(".pending/1.2.3.json") is None
    store.put_hint(".pending/4.5.6.json", b"short")
    assert (root / ".pending/4.5.6.json").stat().st_ino == inode
    assert store.get(".pending/4.5.6.json") == b"short"
    store.close()
    assert all_files(root) == [root / ".pending/4.5.6.json"]  # no spare, no temporary file left


def test_an_object_never_takes_a_spare(store: FilesystemObjectStore, root: Path) -> None:
    """After a crash, journal replay takes an object file holding other bytes than its record for another send's
    object: a spare's old content must never be able to look like that."""
    store.put_hint(".pending/1.2.3.json", b"{}")
    inode = (root / ".pending/1.2.3.json").stat().st_ino
    store.delete_hint(".pending/1.2.3.json")
    store.put_new(KEY, b"object", sha(b"object"))
    assert (root / KEY).stat().st_ino != inode
    assert len(list((root / SPARE_FOLDER).iterdir())) == 1


def test_a_spare_file_is_not_listed(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"x", sha(b"x"))
    store.put_hint(".pending/1.2.3.json", b"{}")
    store.delete_hint(".pending/1.2.3.json")
    assert [info.key for info in store.list("")] == [KEY]


def test_a_large_hint_does_not_take_a_spare(store: FilesystemObjectStore, root: Path) -> None:
    store.put_hint(".pending/1.2.3.json", b"{}")
    store.delete_hint(".pending/1.2.3.json")
    store.put_hint(".pending/4.5.6.json", b"x" * (SPARE_MAX_BYTES + 1))
    assert len(list((root / SPARE_FOLDER).iterdir())) == 1


def test_a_hint_with_another_name_is_deleted_not_kept(store: FilesystemObjectStore, root: Path) -> None:
    store.put_hint(".pending/1.2.3.json", b"{}")
    (root / "elsewhere").hardlink_to(root / ".pending/1.2.3.json")
    store.delete_hint(".pending/1.2.3.json")
    store.put_hint(".pending/4.5.6.json", b"new")
    assert (root / "elsewhere").read_bytes() == b"{}"
    assert not (root / SPARE_FOLDER).exists()


def test_list_is_recursive_and_skips_temporary_files(store: FilesystemObjectStore, root: Path) -> None:
    keys = {"1.2/1.3/1.4.dcm", "1.2/1.3/1.5.dcm", "1.2/1.6/1.7.dcm", "9.9/9.8/9.7.dcm"}
    for key in keys:
        store.put_new(key, key.encode(), sha(key.encode()))
    (root / "1.2" / "1.3" / ".tmp-halfwritten").write_bytes(b"partial")
    assert {info.key for info in store.list("1.2/")} == keys - {"9.9/9.8/9.7.dcm"}
    assert {info.key: info.size for info in store.list("")} == {key: len(key) for key in keys}


def test_listing_everything_leaves_out_the_pending_markers(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"x", sha(b"x"))
    store.put_hint(".pending/1.2.3.4.5.json", b"{}")
    assert [info.key for info in store.list("")] == [KEY]
    assert [info.key for info in store.list(".pending/")] == [".pending/1.2.3.4.5.json"]


def test_list_of_an_absent_prefix_is_empty(store: FilesystemObjectStore) -> None:
    store.put_new(KEY, b"x", sha(b"x"))
    assert list(store.list("4.5.6/")) == []


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", ".hidden/x", "", "a/../b", "a/./b", "a/", "a\\b",
                                 ".pending/../x", ".pending/"])
def test_keys_outside_the_scheme_are_refused(store: FilesystemObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(InvalidKey):
        store.put_new(key, b"x", sha(b"x"))
    with pytest.raises(InvalidKey):
        store.put_hint(key, b"x")
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("key", [KEY, ".pending/x.json", "a_b/c-d.e"])
def test_keys_of_the_scheme_are_accepted(key: str) -> None:
    assert validate_key(key) == key


def test_a_root_that_is_a_file_makes_the_store_unavailable(store: FilesystemObjectStore, root: Path) -> None:
    root.write_bytes(b"not a folder")
    with pytest.raises(StorageUnavailable):
        store.put_new(KEY, b"x", sha(b"x"))
    with pytest.raises(StorageUnavailable):
        store.put_hint(".pending/1.json", b"x")
    with pytest.raises(StorageUnavailable):
        store.ping()


def test_writes_work_again_once_the_folder_is_restored(store: FilesystemObjectStore, root: Path) -> None:
    store.put_new(KEY, b"before", sha(b"before"))
    shutil.rmtree(root)
    root.write_bytes(b"not a folder")
    with pytest.raises(StorageUnavailable):
        store.put_new("1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"during", sha(b"during"))

    root.unlink()
    root.mkdir()  # restored empty, e.g. a remount
    result = store.put_new("1.2.3/1.2.3.4/1.2.3.4.7.dcm", b"after", sha(b"after"))
    assert result.outcome is PutOutcome.CREATED
    assert store.get("1.2.3/1.2.3.4/1.2.3.4.7.dcm") == b"after"
    store.ping()


def test_listing_a_missing_root_is_unavailable_not_empty(store: FilesystemObjectStore, root: Path) -> None:
    with pytest.raises(StorageUnavailable):  # a lost mount must not look like an empty store
        list(store.list(".pending/"))
    store.ping()  # creates the root
    assert list(store.list(".pending/")) == []


def test_the_root_is_created_on_first_write(store: FilesystemObjectStore, root: Path) -> None:
    assert not root.exists()
    store.put_new(KEY, b"x", sha(b"x"))
    assert (root / KEY).is_file()


def test_streamed_data_is_written_chunk_by_chunk_and_compared_like_bytes(store: FilesystemObjectStore,
                                                                         root: Path) -> None:
    chunks = [bytes([n]) * 1000 for n in range(5)]
    whole = b"".join(chunks)
    streamed = StreamedData(len(whole), lambda: iter(chunks))
    assert store.put_new(KEY, streamed, sha(whole)).outcome is PutOutcome.CREATED
    assert store.get(KEY) == whole
    assert store.put_new(KEY, streamed, sha(whole)).outcome is PutOutcome.IDENTICAL
    assert store.put_new(KEY, StreamedData(3, lambda: iter([b"abc"])), sha(b"abc")).outcome is PutOutcome.CONFLICT


class RecordingBarrier:
    """Stands in for the store's SyncBarrier: records which files existed under their names at each flush."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flushes: list[set[str]] = []

    def sync(self) -> None:
        self.flushes.append({path.relative_to(self.root).as_posix() for path in all_files(self.root)
                             if not path.name.startswith(".tmp-") and ".journal" not in path.parts})


def large(content: bytes) -> StreamedData:
    """Data the store flushes in place rather than journals (a spooled data set)."""
    return StreamedData(len(content), lambda: iter([content]))


def test_a_large_durable_put_flushes_before_its_name_exists_and_after(root: Path) -> None:
    barrier = RecordingBarrier(root)
    store = FilesystemObjectStore(root, barrier)  # type: ignore[arg-type]
    store.put_new(".claims/ab/1.2.3.4.5", b"claim", sha(b"claim"), durable=False)
    store.put_hint(".pending/1.2.3.4.5.json", b"{}")
    assert barrier.flushes == []  # neither is flushed on its own
    store.put_new(KEY, large(b"object"), sha(b"object"))
    # The first flush makes the earlier writes and the object's bytes durable before the object has its name.
    assert barrier.flushes == [{".claims/ab/1.2.3.4.5", ".pending/1.2.3.4.5.json"},
                               {".claims/ab/1.2.3.4.5", ".pending/1.2.3.4.5.json", KEY}]


def test_a_large_durable_put_of_an_existing_key_waits_for_a_flush_too(root: Path) -> None:
    # Another thread may have linked it and not flushed it yet: Success must wait for a flush either way.
    barrier = RecordingBarrier(root)
    store = FilesystemObjectStore(root, barrier)  # type: ignore[arg-type]
    store.put_new(KEY, large(b"object"), sha(b"object"), durable=False)
    assert store.put_new(KEY, large(b"object"), sha(b"object")).outcome is PutOutcome.IDENTICAL
    assert store.put_new(KEY, large(b"other"), sha(b"other")).outcome is PutOutcome.CONFLICT
    assert len(barrier.flushes) == 2


def test_count_gives_how_many_list_gives_without_reading_each_file(store: FilesystemObjectStore, root: Path) -> None:
    keys = {"1.2/1.3/1.4.dcm", "1.2/1.3/1.5.dcm", "1.2/1.6/1.7.dcm", "9.9/9.8/9.7.dcm"}
    for key in keys:
        store.put_new(key, key.encode(), sha(key.encode()))
    for uid in ("1.2.3", "1.2.4", "1.2.5"):
        store.put_hint(f".pending/{uid}.json", b"{}")
    store.delete_hint(".pending/1.2.5.json")  # its inode kept as a spare: not an object
    (root / "1.2" / "1.3" / ".tmp-halfwritten").write_bytes(b"partial")
    (root / ".pending" / ".tmp-refilling").write_bytes(b"{}")
    for prefix in ("", "1.2/", "9.9/", ".pending/", "4.5.6/"):
        assert store.count(prefix) == len(list(store.list(prefix))), prefix
    assert (store.count(""), store.count(".pending/")) == (4, 2)


def test_counting_a_missing_root_is_unavailable_not_zero(store: FilesystemObjectStore) -> None:
    with pytest.raises(StorageUnavailable):
        store.count(".pending/")


@pytest.fixture
def stamping_store(store: FilesystemObjectStore, tmp_path: Path) -> FilesystemObjectStore:
    require_stamps(tmp_path)
    return store


def stamp_of(store: FilesystemObjectStore, key: str) -> str | None:
    with store.open(key) as stream:
        return store.stamp(stream)


@pytest.mark.parametrize("content", [b"object", large(b"streamed object")], ids=["journaled", "flushed_in_place"])
def test_a_created_object_has_the_stamp_its_readers_see(stamping_store: FilesystemObjectStore,
                                                       content: bytes | StreamedData) -> None:
    digest = sha(content if isinstance(content, bytes) else b"streamed object")
    created = stamping_store.put_new(KEY, content, digest)
    assert created.stamp is not None
    assert stamp_of(stamping_store, KEY) == created.stamp
    assert stamp_of(stamping_store, KEY) == created.stamp  # reading changes nothing


def test_an_object_deleted_and_written_again_has_another_stamp(stamping_store: FilesystemObjectStore) -> None:
    first = stamping_store.put_new(KEY, b"first", sha(b"first")).stamp
    stamping_store.delete(KEY)
    second = stamping_store.put_new(KEY, b"first", sha(b"first")).stamp
    assert first != second and stamp_of(stamping_store, KEY) == second


def test_an_object_changed_in_place_has_another_stamp(stamping_store: FilesystemObjectStore, root: Path) -> None:
    created = stamping_store.put_new(KEY, b"object", sha(b"object")).stamp
    with (root / KEY).open("ab") as stream:
        stream.write(b" and more")
    assert stamp_of(stamping_store, KEY) != created


def test_a_put_that_creates_nothing_tells_no_stamp(stamping_store: FilesystemObjectStore) -> None:
    stamping_store.put_new(KEY, b"object", sha(b"object"))
    assert stamping_store.put_new(KEY, b"object", sha(b"object")).stamp is None  # identical
    assert stamping_store.put_new(KEY, b"other", sha(b"other")).stamp is None  # conflict


def test_parted_data_is_stored_as_its_parts_joined(store: FilesystemObjectStore, root: Path) -> None:
    parted = PartedData((b"file meta ", b"data set"))
    assert store.put_new(KEY, parted, sha(b"file meta data set")).outcome is PutOutcome.CREATED
    assert (root / KEY).read_bytes() == b"file meta data set"
    assert store.put_new(KEY, parted, sha(b"file meta data set")).outcome is PutOutcome.IDENTICAL


def test_recover_removes_temporary_files_that_a_crashed_marker_write_left(store: FilesystemObjectStore, root: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_hint(".pending/1.2.3.json", b"{}")
    store.put_hint(".deleting/1.2.4", b"1.2/1.3/1.2.4.dcm")
    abandoned = [root / ".pending" / ".tmp-taken-spare", root / ".deleting" / ".tmp-taken-spare"]
    for path in abandoned:
        path.write_bytes(b"an old marker's bytes")  # a spare taken for a marker, then the process was killed
    store.recover()
    assert all(path.exists() for path in abandoned)  # just taken, as far as anyone can tell: a live writer's
    monkeypatch.setattr(abandoned_files, "ABANDONED_SECONDS", 0.0)
    store.recover()
    assert not any(path.exists() for path in abandoned)
    assert sorted(info.key for info in store.list(".pending/")) == [".pending/1.2.3.json"]
    assert store.get(".deleting/1.2.4") == b"1.2/1.3/1.2.4.dcm"


def test_a_put_that_is_not_durable_tells_no_stamp(stamping_store: FilesystemObjectStore) -> None:
    # A claim: nothing reads it by its stamp, so the store does not spend system calls on one.
    assert stamping_store.put_new(".claims/ab/1.2.3", KEY.encode(), sha(KEY.encode()), durable=False).stamp is None


def test_a_staged_hint_is_named_by_publish_and_no_checkpoint_drops_its_record_before(
        store: FilesystemObjectStore, root: Path) -> None:
    import threading

    staged = store.stage_hint(".pending/1.2.3.json", b"marker")
    assert not (root / ".pending/1.2.3.json").exists()
    checkpoint = threading.Thread(target=store._journal.checkpoint)  # type: ignore[attr-defined]
    checkpoint.start()
    checkpoint.join(0.3)
    assert checkpoint.is_alive()  # its segment is held: the record must outlive a crash until the file is named
    staged.publish()
    checkpoint.join(10)
    assert not checkpoint.is_alive()
    assert (root / ".pending/1.2.3.json").read_bytes() == b"marker"
    assert list((root / ".journal").glob("*.wal")) == []


def test_a_dropped_staged_hint_is_never_named_and_lets_the_checkpoint_go(
        store: FilesystemObjectStore, root: Path) -> None:
    store.stage_hint(".pending/1.2.3.json", b"marker").drop()
    store.close()  # a last checkpoint
    assert not (root / ".pending/1.2.3.json").exists()
    assert list((root / ".journal").glob("*.wal")) == []
