"""The local store's journal: a small write is journaled and flushed before its name exists; after a crash,
``recover`` brings back what the files lost; checkpoints drop what the files hold durably."""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared import abandoned_files
from shared.storage import journal
from shared.storage.base import PutOutcome, StorageFull, StorageUnavailable
from shared.storage.filesystem import FilesystemObjectStore
from shared.storage.direct_io import DIRECT_ALIGNMENT
from shared.storage.journal import (
    JOURNAL_FOLDER,
    PUT_HINT,
    PUT_NEW,
    ZERO_AHEAD,
    ZEROED_RECORD_MAX,
    encode_record,
    read_records,
)

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
CLAIM = ".claims/ab/1.2.3.4.5"
MARKER = ".pending/1.2.3.4.5.json"
REPO = Path(__file__).resolve().parents[3]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def segments(root: Path) -> list[Path]:
    folder = root / JOURNAL_FOLDER
    return sorted(folder.glob("*.wal")) if folder.is_dir() else []


def named(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")
            if path.is_file() and JOURNAL_FOLDER not in path.parts}


class CountingFlush:
    """The store-wide flush (syncfs) of a checkpoint, counted."""

    def __init__(self) -> None:
        self.count = 0

    def sync(self) -> None:
        self.count += 1


def test_a_durable_put_is_in_the_flushed_journal_before_its_name_exists(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root, CountingFlush())  # type: ignore[arg-type]
    at_each_journal_flush: list[tuple[set[str], list[str]]] = []
    fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        fdatasync(fd)
        journaled = [record.key for path in segments(root) for record in read_records(str(path))]
        at_each_journal_flush.append((named(root), journaled))

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    store.put_new(CLAIM, b"claim", sha(b"claim"), durable=False)
    store.put_hint(MARKER, b"{}")
    assert at_each_journal_flush == []  # neither is flushed on its own
    store.put_new(KEY, b"object", sha(b"object"))
    assert at_each_journal_flush == [({CLAIM, MARKER}, [CLAIM, MARKER, KEY])]  # journaled and flushed, not named
    assert named(root) == {CLAIM, MARKER, KEY}


def test_a_checkpoint_flushes_the_files_and_drops_the_segment(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    flush = CountingFlush()
    store = FilesystemObjectStore(root, flush)  # type: ignore[arg-type]
    store.put_new(KEY, b"object", sha(b"object"))
    assert len(segments(root)) == 1 and flush.count == 0
    store.close()
    assert segments(root) == [] and flush.count == 1
    assert store.get(KEY) == b"object"


def test_checkpoints_happen_by_themselves(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    store._journal._checkpoint_seconds = 0.05  # type: ignore[attr-defined]
    store.put_new(KEY, b"object", sha(b"object"))
    deadline = time.monotonic() + 10
    while segments(root) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert segments(root) == []


class SlowFlush:
    """A checkpoint's syncfs that takes until it is released."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def sync(self) -> None:
        self.started.set()
        assert self.release.wait(10)


def test_a_durable_put_also_flushes_an_earlier_segment_whose_checkpoint_is_under_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim and marker of an instance are journaled in a segment that a checkpoint retires before the object is
    journaled (in the next segment): the object's put must not return before they are durable, and the
    checkpoint's store-wide flush may still be running."""
    root = tmp_path / "objects"
    flush = SlowFlush()
    store = FilesystemObjectStore(root, flush)  # type: ignore[arg-type]
    store.put_new(CLAIM, b"claim", sha(b"claim"), durable=False)
    store.put_hint(MARKER, b"{}")
    [earlier] = segments(root)
    checkpoint = threading.Thread(target=store._journal.checkpoint)  # type: ignore[attr-defined]
    checkpoint.start()
    try:
        assert flush.started.wait(10)  # the claim's and the marker's segment retired, its flush under way
        flushed: list[str] = []
        fdatasync = os.fdatasync

        def recording_fdatasync(fd: int) -> None:
            fdatasync(fd)
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))

        monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
        store.put_new(KEY, b"object", sha(b"object"))
        [later] = [path for path in segments(root) if path != earlier]
        assert sorted(flushed) == sorted([str(earlier), str(later)])
    finally:
        flush.release.set()
        checkpoint.join(10)
    assert named(root) == {CLAIM, MARKER, KEY}
    store.close()


def test_a_durable_put_fails_when_an_earlier_segment_cannot_be_flushed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    flush = SlowFlush()
    store = FilesystemObjectStore(root, flush)  # type: ignore[arg-type]
    store.put_hint(MARKER, b"{}")
    [earlier] = segments(root)
    checkpoint = threading.Thread(target=store._journal.checkpoint)  # type: ignore[attr-defined]
    checkpoint.start()
    try:
        assert flush.started.wait(10)
        fdatasync = os.fdatasync

        def failing_on_the_earlier_segment(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}") == str(earlier):
                raise OSError(errno.EIO, "I/O error")
            fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", failing_on_the_earlier_segment)
        with pytest.raises(StorageUnavailable):
            store.put_new(KEY, b"object", sha(b"object"))
    finally:
        flush.release.set()
        checkpoint.join(10)
    store.close()


def test_durable_puts_of_several_threads_succeed_while_checkpoints_come_and_go(tmp_path: Path) -> None:
    """An earlier segment flushed by a durable put may be closed by its checkpoint at that moment (it was made
    durable first): that is no failure of the put."""
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    store._journal._checkpoint_seconds = 0.001  # type: ignore[attr-defined]
    failures: list[BaseException] = []

    def sender(number: int) -> None:
        try:
            for instance in range(150):
                uid = f"1.2.{number}.{instance}"
                claim = f"1.2/{uid}.dcm".encode()
                store.put_new(f".claims/ab/{uid}", claim, sha(claim), durable=False)
                store.put_hint(f".pending/{uid}.json", b"{}")
                store.put_new(f"1.2/{uid}.dcm", b"object %d" % instance, sha(b"object %d" % instance))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    senders = [threading.Thread(target=sender, args=(number,)) for number in range(4)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    store.close()
    assert failures == []
    assert len(list(store.list("1.2/"))) == 600


def test_a_segment_being_created_is_never_taken_for_the_segment_of_a_process_that_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's recovery (its start, a deletion's settle) that lists the folder while this process creates
    a segment must not take it: it would replay and remove it, and this process's records would go to a file
    without a name."""
    root = tmp_path / "objects"
    store, other_process = FilesystemObjectStore(root), FilesystemObjectStore(root)
    flock = fcntl.flock
    recovered: list[int] = []

    def recovery_before_the_lock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not recovered:  # the new segment's own lock, about to be taken
            recovered.append(other_process._journal.recover())
        flock(fd, operation)

    monkeypatch.setattr(journal.fcntl, "flock", recovery_before_the_lock)
    store.put_new(KEY, b"object", sha(b"object"))
    assert recovered == [0]
    assert [record.key for path in segments(root) for record in read_records(str(path))] == [KEY]
    assert [path.name for path in (root / JOURNAL_FOLDER).iterdir() if not path.name.endswith(".wal")] == []


def test_recovery_removes_a_segment_a_crash_cut_before_it_was_locked(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "objects" / JOURNAL_FOLDER
    folder.mkdir(parents=True)
    (folder / "123-0abc.wal-new").write_bytes(b"")
    store = FilesystemObjectStore(tmp_path / "objects")
    store.recover()
    assert (folder / "123-0abc.wal-new").exists()  # as young as one being created right now: left alone
    monkeypatch.setattr(abandoned_files, "ABANDONED_SECONDS", -1.0)
    store.recover()
    assert not (folder / "123-0abc.wal-new").exists()


WRITER = """
import hashlib, os, sys
from pathlib import Path
from shared.storage.filesystem import FilesystemObjectStore
store = FilesystemObjectStore(Path(sys.argv[1]))
for number in range(7):
    data = f"object {number} ".encode() * (100 if number < 5 else 10_000)  # 5 and 6: large, written directly
    claim = f"1.2/{number}.dcm".encode()
    store.put_new(f".claims/ab/1.2.{number}", claim, hashlib.sha256(claim).hexdigest(), durable=False)
    store.put_hint(f".pending/1.2.{number}.json", b"marker %d" % number)
    store.put_new(f"1.2/{number}.dcm", data, hashlib.sha256(data).hexdigest())
os._exit(0)  # no checkpoint: as if the process, or the machine, went down here
"""


def crashed_writer(root: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(root)], cwd=REPO, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def test_recover_brings_back_what_a_crash_of_the_machine_took(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    crashed_writer(root)
    assert len(segments(root)) == 1
    # What the page cache held and the disk did not: a name without its bytes, a name lost, an empty claim.
    (root / "1.2/0.dcm").write_bytes(b"")
    (root / "1.2/1.dcm").write_bytes((b"object 1 " * 100)[:4096])
    (root / "1.2/2.dcm").unlink()
    (root / ".claims/ab/1.2.3").write_bytes(b"")
    (root / ".pending/1.2.4.json").unlink()
    (root / "1.2/5.dcm").unlink()
    (root / "1.2/6.dcm").write_bytes((b"object 6 " * 10_000)[:DIRECT_ALIGNMENT])
    FilesystemObjectStore(root).recover()
    for number in range(7):
        assert (root / f"1.2/{number}.dcm").read_bytes() == f"object {number} ".encode() * (
            100 if number < 5 else 10_000)
        assert (root / f".claims/ab/1.2.{number}").read_bytes() == f"1.2/{number}.dcm".encode()
        assert (root / f".pending/1.2.{number}.json").read_bytes() == b"marker %d" % number
    assert segments(root) == []


SHARED_CLAIMS_WRITER = """
import hashlib, os, sys
from pathlib import Path
from shared.storage.filesystem import FilesystemObjectStore
store = FilesystemObjectStore(Path(sys.argv[1]))
for number in range(3):
    store.put_claim(f".claims/ab/1.2.{number}", b"1.2/*.dcm")
    data = f"object {number}".encode()
    store.put_new(f"1.2/1.2.{number}.dcm", data, hashlib.sha256(data).hexdigest())
os._exit(0)
"""


def test_recover_rewrites_the_claims_of_an_anchor_the_crash_tore(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    subprocess.run([sys.executable, "-c", SHARED_CLAIMS_WRITER, str(root)], cwd=REPO, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    [anchor] = (root / ".anchors").iterdir()
    assert anchor.stat().st_nlink == 4
    anchor.write_bytes(b"1.2/")  # the claims' common file lost the end of its bytes, and with it all three claims
    (root / ".claims/ab/1.2.1").unlink()  # and a claim lost its name
    FilesystemObjectStore(root).recover()
    for number in range(3):
        assert (root / f".claims/ab/1.2.{number}").read_bytes() == b"1.2/*.dcm"


def test_recover_keeps_an_object_another_send_wrote_under_the_key(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    crashed_writer(root)
    (root / "1.2/0.dcm").write_bytes(b"the first send's object, complete")
    FilesystemObjectStore(root).recover()
    assert (root / "1.2/0.dcm").read_bytes() == b"the first send's object, complete"


def test_a_live_process_segment_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    writer = FilesystemObjectStore(root)
    writer.put_new(KEY, b"object", sha(b"object"))
    (root / KEY).unlink()  # whatever happens to the files, the live process's checkpoint has the last word
    FilesystemObjectStore(root).recover()
    assert not (root / KEY).exists() and len(segments(root)) == 1


@pytest.mark.parametrize("hashed", [True, False], ids=["checked_by_sha256", "checked_by_crc32_as_before"])
def test_a_segment_is_read_up_to_its_first_damaged_record(tmp_path: Path, hashed: bool) -> None:
    path = tmp_path / "segment.wal"
    data = [b"data %d" % number for number in range(3)]
    records = [encode_record(PUT_NEW, f"key/{number}", [data[number]], sha(data[number]) if hashed else None)
               for number in range(3)]
    raw = [b"".join(parts) for parts in records]
    path.write_bytes(b"".join(raw))
    assert [(record.kind, record.data) for record in read_records(str(path))] == [(PUT_NEW, item) for item in data]
    damaged = bytearray(raw[1])
    damaged[-1] ^= 0xFF
    path.write_bytes(raw[0] + bytes(damaged) + raw[2])
    assert [record.key for record in read_records(str(path))] == ["key/0"]
    path.write_bytes(raw[0] + raw[1][:-3])  # the tail of an unflushed append
    assert [record.key for record in read_records(str(path))] == ["key/0"]


def test_a_record_in_parts_is_read_as_its_joined_data(tmp_path: Path) -> None:
    path = tmp_path / "segment.wal"
    parts = [b"header ", b"data set"]
    path.write_bytes(b"".join(encode_record(PUT_NEW, "key/1", parts, sha(b"header data set"))
                              + encode_record(PUT_HINT, "key/2", parts)))
    assert [(record.kind, record.data) for record in read_records(str(path))] == [
        (PUT_NEW, b"header data set"), (PUT_HINT, b"header data set")]


def journaled_put(store: FilesystemObjectStore, name: str, data: bytes) -> int:
    """Store ``data`` as ``1.2/<name>.dcm``; the length of its journal record."""
    store.put_new(f"1.2/{name}.dcm", data, sha(data))
    return len(b"".join(encode_record(PUT_NEW, f"1.2/{name}.dcm", [data], sha(data))))


def aligned(offset: int) -> int:
    return -(-offset // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT


def test_small_records_are_written_over_zeros_ahead_of_them_which_are_not_read_as_records(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    put = functools.partial(journaled_put, store)
    records = sum(put(str(number), b"object %d" % number) for number in range(3))
    [segment] = segments(tmp_path / "objects")
    assert segment.stat().st_size == len(ZERO_AHEAD)
    assert segment.read_bytes()[records:] == bytes(len(ZERO_AHEAD) - records)
    store.close()


def test_a_large_record_goes_past_the_zeros_at_a_boundary_padded_and_the_segment_zeroes_no_more(
        tmp_path: Path) -> None:
    """Written with O_DIRECT where no page of the segment was ever cached: after the zeros, at the next
    DIRECT_ALIGNMENT boundary, and padded to the one after it. Readers skip the pads; small records follow the large
    one as they come (the next segment zeroes again)."""
    store = FilesystemObjectStore(tmp_path / "objects")
    put = functools.partial(journaled_put, store)
    put("small", b"small")
    large = put("large", b"L" * (len(ZERO_AHEAD) // 2))  # would fit in the zeros: goes past them all the same
    [segment] = segments(tmp_path / "objects")
    start = segment.read_bytes().index(b"1.2/large.dcm") - 15  # the record's header comes before its key
    assert start == len(ZERO_AHEAD)
    end_of_large = aligned(start + large + 15)  # room for a pad after it
    assert segment.stat().st_size == end_of_large
    smalls = put("small-1", b"s" * 1000) + put("small-2", b"s" * 1000)
    assert segment.stat().st_size == end_of_large + smalls  # past the zeros: no new ones
    assert [record.key for record in read_records(str(segment))] == [
        "1.2/small.dcm", "1.2/large.dcm", "1.2/small-1.dcm", "1.2/small-2.dcm"]
    store.close()


def test_a_large_record_is_written_around_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its bytes are not copied into page-cache pages that nobody reads again (the costliest part of writing a large
    object on the machine the benchmarks run on); small records are."""
    direct_writes: list[tuple[bool, int]] = []
    write = os.pwritev

    def noting(fd: int, buffers: list[memoryview], offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".wal"):
            direct_writes.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT),
                                  sum(len(buffer) for buffer in buffers)))
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", noting)
    store = FilesystemObjectStore(tmp_path / "objects")
    journaled_put(store, "small", b"small")
    journaled_put(store, "large", b"L" * (ZEROED_RECORD_MAX + 1))
    store.close()
    assert [size > ZEROED_RECORD_MAX for direct, size in direct_writes if direct] == [True]
    assert not [size for direct, size in direct_writes if not direct and size > ZEROED_RECORD_MAX
                and size != len(ZERO_AHEAD)]


def refusing_direct_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refusing(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # tmpfs
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)


def refusing_direct_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    write = os.pwritev

    def refusing(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # a block size larger than the alignment
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", refusing)


@pytest.mark.parametrize("refuse", [refusing_direct_opens, refusing_direct_writes],
                         ids=["at_open", "at_write"])
def test_where_direct_writes_are_refused_large_records_follow_the_others_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuse: object) -> None:
    refuse(monkeypatch)  # type: ignore[operator]
    store = FilesystemObjectStore(tmp_path / "objects")
    put = functools.partial(journaled_put, store)
    small = put("small", b"small")
    large = [put(f"large-{number}", b"L" * len(ZERO_AHEAD)) for number in range(2)]
    [segment] = segments(tmp_path / "objects")
    assert segment.stat().st_size == small + sum(large)  # written where they came, no pads
    assert [record.key for record in read_records(str(segment))] == ["1.2/small.dcm", "1.2/large-0.dcm",
                                                                     "1.2/large-1.dcm"]
    assert (tmp_path / "objects/1.2/large-1.dcm").read_bytes() == b"L" * len(ZERO_AHEAD)
    store.close()


def test_pads_are_skipped_and_a_damaged_pad_ends_the_reading(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    put = functools.partial(journaled_put, store)
    for name in ("first", "large", "last"):
        put(name, b"x" * (ZEROED_RECORD_MAX + 1) if name == "large" else name.encode())
    [segment] = segments(tmp_path / "objects")
    assert [record.key for record in read_records(str(segment))] == ["1.2/first.dcm", "1.2/large.dcm", "1.2/last.dcm"]
    raw = bytearray(segment.read_bytes())
    pad_before_large = raw.index(b"1.2/first.dcm") + len(b"1.2/first.dcm") + 32 + len(b"first")
    raw[pad_before_large + 5] ^= 0xFF  # in its header (the key length): no longer a pad
    damaged = tmp_path / "damaged.wal"
    damaged.write_bytes(bytes(raw))
    assert [record.key for record in read_records(str(damaged))] == ["1.2/first.dcm"]
    store.close()


def test_a_disk_without_room_for_the_zeros_still_takes_the_records(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_at = os.pwritev

    def no_room_for_a_mebibyte(fd: int, buffers: list[memoryview], offset: int) -> int:
        if sum(len(buffer) for buffer in buffers) >= len(ZERO_AHEAD):
            write_at(fd, [bytes(4096)], offset)  # what fitted before the disk was full
            raise OSError(28, "No space left on device")
        return write_at(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", no_room_for_a_mebibyte)
    store = FilesystemObjectStore(tmp_path / "objects")
    assert store.put_new("1.2/1.dcm", b"first", sha(b"first")).outcome is PutOutcome.CREATED
    assert store.put_new("1.2/2.dcm", b"second", sha(b"second")).outcome is PutOutcome.CREATED
    [segment] = segments(tmp_path / "objects")
    assert [record.key for record in read_records(str(segment))] == ["1.2/1.dcm", "1.2/2.dcm"]
    assert segment.stat().st_size == sum(len(b"".join(encode_record(PUT_NEW, f"1.2/{n}.dcm", [data], sha(data))))
                                         for n, data in ((1, b"first"), (2, b"second")))
    store.close()


def test_a_record_the_system_writes_in_short_pieces_is_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_at = os.pwritev

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        requested = b"".join(buffers)
        return write_at(fd, [requested[:7 if len(requested) < 1 << 16 else 1 << 16]], offset)  # records, zeros

    monkeypatch.setattr(os, "pwritev", short)
    store = FilesystemObjectStore(tmp_path / "objects")
    store.put_new("1.2/1.dcm", b"object one", sha(b"object one"))
    store.put_new("1.2/2.dcm", b"object two", sha(b"object two"))
    [segment] = segments(tmp_path / "objects")
    assert [(record.key, record.data) for record in read_records(str(segment))] == [
        ("1.2/1.dcm", b"object one"), ("1.2/2.dcm", b"object two")]
    store.close()


def test_a_marker_record_replaces_whatever_the_file_holds(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    folder = root / JOURNAL_FOLDER
    folder.mkdir(parents=True)
    (folder / "1-dead.wal").write_bytes(b"".join(encode_record(PUT_HINT, MARKER, [b"new"])))
    (root / ".pending").mkdir()
    (root / MARKER).write_bytes(b"torn")
    FilesystemObjectStore(root).recover()
    assert (root / MARKER).read_bytes() == b"new"


def test_settle_waits_until_a_running_process_checkpointed(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    writer = FilesystemObjectStore(root)
    writer._journal._checkpoint_seconds = 0.3  # type: ignore[attr-defined]
    writer.put_new(KEY, b"object", sha(b"object"))
    started = time.monotonic()
    FilesystemObjectStore(root).settle()
    assert segments(root) == [] and time.monotonic() - started < 5


def test_concurrent_durable_puts_share_journal_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    flushes = []
    fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        flushes.append(fd)
        time.sleep(0.01)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    threads = [threading.Thread(target=lambda n=n: [store.put_new(f"1.2/{n}/{i}.dcm", b"x%d" % i, sha(b"x%d" % i))
                                                    for i in range(20)]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(named(root)) == 80
    assert len(flushes) < 80  # threads that arrive during a flush share the next one


def test_a_journaled_write_of_an_existing_key_is_a_conflict_not_an_overwrite(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    store.put_new(KEY, b"first", sha(b"first"))
    assert store.put_new(KEY, b"second", sha(b"second")).outcome is PutOutcome.CONFLICT
    store.close()
    assert store.get(KEY) == b"first"


def test_a_write_cut_short_by_a_full_disk_leaves_the_later_records_readable(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    store.put_new("1.2/1.dcm", b"first", sha(b"first"))
    write_at = os.pwritev

    def half_then_full(fd: int, buffers: list[memoryview], offset: int) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".wal"):
            return write_at(fd, buffers, offset)
        monkeypatch.setattr(os, "pwritev", write_at)
        record = b"".join(buffers)
        write_at(fd, [record[:len(record) // 2]], offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwritev", half_then_full)
    with pytest.raises(StorageFull):
        store.put_new("1.2/2.dcm", b"second" * 100, sha(b"second" * 100))
    store.put_new("1.2/3.dcm", b"third", sha(b"third"))
    [segment] = segments(tmp_path / "objects")
    assert [record.key for record in read_records(str(segment))] == ["1.2/1.dcm", "1.2/3.dcm"]


def test_a_checkpoint_after_the_folder_was_replaced_by_an_empty_one_ends_instead_of_failing_forever(
        tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    store.put_new(KEY, b"object", sha(b"object"))
    shutil.rmtree(root)
    root.mkdir()  # a remount of an empty volume: the segment is gone with everything it journaled
    store._journal.checkpoint()  # the checkpointer thread does this every second; it used to fail each time
    store.put_new(KEY, b"again", sha(b"again"))
    store.close()
    assert store.get(KEY) == b"again" and segments(root) == []


def test_a_large_record_of_whole_blocks_is_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct record that happens to end on a block boundary (no pad after it) is not written a second time
    through the page cache."""
    writes: list[bool] = []
    write = os.pwritev

    def noting(fd: int, buffers: list[memoryview], offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".wal"):
            writes.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", noting)
    store = FilesystemObjectStore(tmp_path / "objects")
    key = "1.2/whole.dcm"
    data = b"W" * (DIRECT_ALIGNMENT * 32 - 15 - len(key) - 32)  # header, key and digest make whole blocks
    assert len(b"".join(encode_record(PUT_NEW, key, [data], sha(data)))) % DIRECT_ALIGNMENT == 0
    store.put_new(key, data, sha(data))
    [segment] = segments(tmp_path / "objects")
    assert writes == [True] and segment.stat().st_size == DIRECT_ALIGNMENT * 32
    assert [record.data for record in read_records(str(segment))] == [data]
    store.close()
