"""The write-ahead journal of a local object store: durability with one ``fdatasync`` of one file.

A durable new file costs a journal commit of the file system (its inode, its name, its folder): two ``syncfs`` or
``fsync`` calls per instance, ~0.4–1 ms on this machine, more while other programs write to the same file system
(``syncfs`` waits for their data too). Here every write of the store's ingest path — claim, pending marker, object —
is first appended to a segment file of the process's journal, the object's record is flushed with ``fdatasync``
(one file, shared by every thread storing at that moment: group commit, shared.storage.sync_barrier), and only
then do the files get their names, without a flush of their own. A checkpointer thread makes the files durable in
bulk (one ``syncfs`` per segment, every CHECKPOINT_SECONDS or CHECKPOINT_BYTES) and then removes the segment. A
durable write whose segment began while an earlier one was not yet checkpointed flushes that one too
(``make_durable``): the claim and marker written just before it may be in it.

After a crash of the machine, what was acknowledged is in the journal: ``recover`` replays the segments of
processes that are gone (a live process holds an exclusive ``flock`` on its segments), in order, idempotently:

- a new object or claim (``PUT_NEW``) is written if its key is missing, and rewritten if the file under the key is
  a strict prefix of the record (a file whose name reached the disk before all of its bytes); a file with other
  content is left alone (another send of the same key won);
- a marker (``PUT_HINT``) is rewritten unless the file holds exactly its content.

A segment is written ahead with zeros, a MiB at a time, and its small records (up to 64 KiB) are written over
them: flushing a record then writes the record's pages and nothing else, where appending to the end of the file
made every ``fdatasync`` also allocate blocks and write the file's inode (measured here, the SCP's flushes while one
association stores small instances: 434 us on average appended, 223-290 us written over zeros). A larger record
(a CT slice) is written around the page cache (``O_DIRECT``, shared.storage.direct_io) through a second descriptor
of the segment, at the next block boundary past every page the segment ever had in the page cache (a reader could
otherwise be given a stale cached copy), and padded to the next one. It still becomes durable with the segment's
``fdatasync`` (which also flushes the disk's cache), as the small records beside it do. The room before and after it
holds pad records, which readers skip. Where the file system refuses ``O_DIRECT`` (tmpfs), large records are written
like small ones. A segment is read up to its first incomplete or damaged record (zeros are not a record): records
after it were never flushed, so nothing acknowledged depended on them. Replay may re-create a pending marker that
the indexer had already removed: the instance is indexed again, which changes nothing (replays are idempotent).
Deleting objects waits for ``settle`` (every segment that exists at that moment checkpointed or replayed), so no
replay brings back an object deleted after it was journaled.

A file whose record was flushed but which its writer could not name afterwards (a disk error after the C-STORE
answer, shared.storage.filesystem.stage_new) makes the process keep every segment not yet checkpointed
(``keep_for_replay``): their checkpoint closes them, unlocked, instead of removing them, and ``recover`` replays
them, in this process after each checkpoint until it succeeds, or at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from shared.abandoned_files import remove_abandoned
from shared.file_writes import write_at
from shared.storage import direct_io
from shared.storage.sync_barrier import SyncBarrier

log = logging.getLogger(__name__)

JOURNAL_FOLDER = ".journal"
SEGMENT_SUFFIX = ".wal"
_BEGINNING_SUFFIX = ".wal-new"  # a segment being created, until it is locked (a crash may leave one: removed later)
CHECKPOINT_SECONDS = 1.0
CHECKPOINT_BYTES = 64 << 20
SETTLE_SECONDS = 10.0  # longest wait of ``settle`` for live segments to be checkpointed
PUT_NEW = 1  # a new object or claim
PUT_HINT = 2  # a marker
# How a PUT_NEW is written: the CRC-32 covers the header, the key and the data's SHA-256 (32 bytes after the key),
# which covers the data. The writer has that hash already, so a large object is not read once more for a CRC
# (526 KB: 0.23 ms here). Read back as PUT_NEW; PUT_NEW records with a CRC of the data are still read.
_PUT_NEW_HASHED = 3
_PAD = 4  # room before or after a record written directly (O_DIRECT); its CRC-32 covers its header only
_RECORD = struct.Struct(">IBHQ")  # CRC-32 of the rest, kind, key length, data length; then key, [digest,] data
_KINDS = frozenset({PUT_NEW, PUT_HINT, _PUT_NEW_HASHED, _PAD})
_DIGEST_LENGTH = 32
ZERO_AHEAD = bytes(1 << 20)  # written ahead of a segment's small records
# A larger record is written where it comes, past the zeros if it does not fit, and the segment zeroes no more: the
# flush of such a record allocates blocks once for many pages anyway, the small records beside it (its claim and
# marker) ride on that flush, and zeros ahead of them would be written over by the next large record after being
# copied into the page cache and written to disk for nothing (measured, 526 KB objects at C=4: 1,352-1,365 KB written
# to disk per object with zeros, 1,110-1,122 KB without). The next segment (a checkpoint starts one every
# CHECKPOINT_SECONDS) zeroes again.
ZEROED_RECORD_MAX = 64 << 10


def _pad_record(size: int) -> list[bytes]:
    """A record of ``size`` bytes in all (at least a header) that readers skip."""
    head = struct.pack(">BHQ", _PAD, 0, size - _RECORD.size)
    return [struct.pack(">I", zlib.crc32(head)) + head, bytes(size - _RECORD.size)]


def _room(start: int, end: int) -> int:
    """Where a pad from ``start`` can end: at ``end``, or at the boundary after it (a pad needs room for its header)."""
    return end + direct_io.DIRECT_ALIGNMENT if 0 < end - start < _RECORD.size else end


@dataclass(frozen=True)
class Record:
    kind: int
    key: str
    data: bytes


def encode_record(kind: int, key: str, parts: Sequence[bytes], sha256: str | None = None) -> list[bytes]:
    """A record of ``parts`` (the data, in pieces that are not joined); with ``sha256`` (theirs, hex) a PUT_NEW is
    checked by that hash instead of a CRC of the data."""
    raw_key = key.encode("ascii")
    size = sum(len(part) for part in parts)
    if sha256 is not None and kind == PUT_NEW:
        head = struct.pack(">BHQ", _PUT_NEW_HASHED, len(raw_key), size)
        digest = bytes.fromhex(sha256)
        return [struct.pack(">I", zlib.crc32(digest, zlib.crc32(raw_key, zlib.crc32(head)))) + head, raw_key,
                digest, *parts]
    head = struct.pack(">BHQ", kind, len(raw_key), size)
    checksum = zlib.crc32(raw_key, zlib.crc32(head))
    for part in parts:
        checksum = zlib.crc32(part, checksum)
    return [struct.pack(">I", checksum) + head, raw_key, *parts]


def read_records(path: str) -> Iterator[Record]:
    """The complete, undamaged records of a segment, in order, up to the first that is not."""
    with open(path, "rb") as stream:
        while True:
            header = stream.read(_RECORD.size)
            if len(header) < _RECORD.size:
                return
            checksum, kind, key_length, data_length = _RECORD.unpack(header)
            if kind not in _KINDS or data_length > 1 << 40:
                return
            if kind == _PAD:
                if key_length or zlib.crc32(header[4:]) != checksum or len(stream.read(data_length)) < data_length:
                    return
                continue
            raw_key = stream.read(key_length)
            digest = stream.read(_DIGEST_LENGTH) if kind == _PUT_NEW_HASHED else b""
            data = stream.read(data_length)
            if (len(raw_key) < key_length or len(data) < data_length
                    or (kind == _PUT_NEW_HASHED and len(digest) < _DIGEST_LENGTH)):
                return
            if kind == _PUT_NEW_HASHED:
                if (zlib.crc32(digest, zlib.crc32(raw_key, zlib.crc32(header[4:]))) != checksum
                        or hashlib.sha256(data).digest() != digest):
                    return
                kind = PUT_NEW
            elif zlib.crc32(data, zlib.crc32(raw_key, zlib.crc32(header[4:]))) != checksum:
                return
            try:
                key = raw_key.decode("ascii")
            except UnicodeDecodeError:
                return
            yield Record(kind, key, data)


class _Segment:
    """One journal file of this process, locked for as long as it is open."""

    def __init__(self, folder: str, number: int) -> None:
        self.number = number  # the order in which this process began its segments
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.path = os.path.join(folder, f"{name}{SEGMENT_SUFFIX}")
        # Locked before it has the name recovery lists: another process's recovery (at its start, or a deletion's
        # settle) that found it unlocked took it for a dead process's, removed it, and this process appended its
        # records to a file without a name (seen in a benchmark: a C-STORE then failed, 0xA701).
        beginning = os.path.join(folder, f"{name}{_BEGINNING_SUFFIX}")
        self.fd = os.open(beginning, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # live: recovery leaves it alone
            os.rename(beginning, self.path)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(beginning)
            raise
        self.size = 0  # of the records
        self._zeroed = 0  # the file's length: zeros from ``size`` up to here
        self._zeroing = True  # until a large record or a disk without room for the zeros (see ZEROED_RECORD_MAX)
        self.broken = False  # a failed write could not be cut off: no more appends here
        self.writers = 0  # threads between their append and the naming of their file
        self.left_to_replay = False  # a file it records could not be named: kept for ``recover``, not removed
        self.barrier = SyncBarrier(folder, self._flush)
        self._write_lock = threading.Lock()
        self._direct_fd = direct_io.open_direct(self.path)  # None where the file system refuses O_DIRECT

    def append(self, kind: int, key: str, parts: Sequence[bytes], sha256: str | None = None) -> None:
        """One whole record of ``parts`` (see encode_record), or none: a failed write (a full disk) is cut off
        again, so that the records appended after it stay readable."""
        record = encode_record(kind, key, parts, sha256)  # written as parts: a large object is not copied into one
        length = sum(len(part) for part in record)
        with self._write_lock:
            start = self.size
            end = start + length
            try:
                if length > ZEROED_RECORD_MAX:
                    self._zeroing = False
                    direct_end = self._append_direct(record, length) if self._direct_fd is not None else None
                    if direct_end is None:
                        write_at(self.fd, record, start)
                    else:
                        end = direct_end
                else:
                    if self._zeroing and end > self._zeroed:
                        self._zero_ahead()
                    write_at(self.fd, record, start)
            except OSError:
                try:
                    os.ftruncate(self.fd, start)
                    self._zeroed = start
                except OSError:
                    self.broken = True
                raise
            self.size = end
            self._zeroed = max(self._zeroed, end)

    def _append_direct(self, record: list[bytes], length: int) -> int | None:
        """Write ``record`` with O_DIRECT past every page this segment had in the page cache (whose stale copies a
        reader could otherwise be given), with pads before and after it; the segment's new end. Where O_DIRECT turns
        out to be refused, nothing is written, direct writes stop, and None tells the caller to write the record as
        usual."""
        start = self.size
        at = _room(start, direct_io.aligned(max(start, self._zeroed)))
        end = _room(at + length, direct_io.aligned(at + length))
        buffer = direct_io.buffers.take(end - at)
        try:
            direct_io.copy_into(buffer, [*record, *(_pad_record(end - at - length) if end > at + length else ())])
            if at > start:  # only the pad's header: its room holds zeros already (written ahead, or past the end)
                write_at(self.fd, _pad_record(at - start)[:1], start)
            direct_io.write_blocks(self._direct_fd, buffer, end - at, at)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            os.ftruncate(self.fd, start)
            self._zeroed = start
            self._close_direct()
            return None
        finally:
            direct_io.buffers.give(buffer)
        return end

    def _close_direct(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None

    def _zero_ahead(self) -> None:
        try:
            write_at(self.fd, [ZERO_AHEAD], self._zeroed)
            self._zeroed += len(ZERO_AHEAD)
        except OSError:  # a nearly full disk: the zeros must not take the room the records still have
            os.ftruncate(self.fd, self._zeroed)
            self._zeroing = False

    def _flush(self) -> None:
        fd = self.fd
        if fd >= 0:  # else closed by its checkpoint, which made it durable first
            os.fdatasync(fd)

    def close(self) -> None:
        """Marked closed before the descriptor is: a thread whose flush of this segment fails because it was just
        closed sees why (Journal.make_durable)."""
        self._close_direct()
        fd, self.fd = self.fd, -1
        os.close(fd)  # and with it the lock


class Journal:
    """The journal of one object store in one process."""

    def __init__(self, folder: str, flush_all: Callable[[], None], replay: Callable[[Record], None],
                 checkpoint_seconds: float = CHECKPOINT_SECONDS, checkpoint_bytes: int = CHECKPOINT_BYTES) -> None:
        self._folder = folder
        self._flush_all = flush_all  # makes every earlier write to the store's file system durable
        self._replay = replay
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_bytes = checkpoint_bytes
        self._state = threading.Condition()  # guards the segments; a checkpoint waits on it for writers to leave
        self._due = threading.Event()  # wakes the checkpointer early (a full segment, the end of the process)
        self._draining = 0  # checkpoints waiting for the writers of retired segments
        self._current: _Segment | None = None
        self._retired: list[_Segment] = []  # no longer appended to, not yet checkpointed
        self._checkpointing: list[_Segment] = []  # taken by the checkpoint under way, until it removed them
        self._segments_begun = 0
        self._replays_asked = 0  # by keep_for_replay; the checkpointer replays what it kept until it caught up
        self._replays_done = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        journal = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_parent(journal()))

    # ---- writing ----------------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[_Segment]:
        """The segment to append to; the checkpointer waits for the block to end before it flushes the segment."""
        segment = self.hold()
        try:
            yield segment
        finally:
            self.release(segment)

    def hold(self) -> _Segment:
        """The segment to append to, held (not checkpointed) until ``release``: for a file named after its append
        returned (``writing`` for one within a block)."""
        with self._state:
            segment = self._segment()
            segment.writers += 1
        return segment

    def release(self, segment: _Segment) -> None:
        with self._state:
            segment.writers -= 1
            if segment.broken and segment is self._current:
                self._retire()
            if self._draining and segment.writers == 0:
                self._state.notify_all()
        if segment.size >= self._checkpoint_bytes:
            self._due.set()

    def keep_for_replay(self) -> None:
        """A file journaled by a thread that still holds its segment could not be named: every segment not yet
        checkpointed is kept, not removed, by its checkpoint and replayed by ``recover`` (this process's
        checkpointer tries that after each checkpoint until it succeeds; the next start does otherwise), which
        names the file and whatever was journaled beside it (replays are idempotent)."""
        with self._state:
            for segment in (self._current, *self._retired, *self._checkpointing):
                if segment is not None:
                    segment.left_to_replay = True
            self._replays_asked += 1
        self._due.set()

    def make_durable(self, segment: _Segment) -> None:
        """Return once everything this process journaled so far is durable: ``segment``'s records by its flush
        (shared by the threads flushing it), and those of earlier segments not yet checkpointed by theirs.

        A thread's claim and marker can land in an earlier segment than its object: a checkpoint that begins
        between them retires the segment they are in, and the object goes to the next. That checkpoint makes them
        durable with its ``syncfs``, which may still run when the object's flush is done: acknowledged then, a crash
        of the machine could keep the object and lose its marker, so that nothing would ever index it. Waiting for
        that checkpoint instead could wait for this very thread (a checkpoint that took both segments waits for
        their writers), so the earlier segment is flushed here too; one that its checkpoint closed meanwhile was
        made durable before it was closed."""
        segment.barrier.sync()
        with self._state:
            earlier = [older for older in (*self._retired, *self._checkpointing) if older.number < segment.number]
        for older in earlier:
            try:
                older.barrier.sync()
            except OSError:
                if older.fd >= 0:
                    raise  # else it was closed while flushed here: durable before that

    def forget_parent(self) -> None:
        """In a forked child: the parent's segments, locks and thread are not ours."""
        self._state = threading.Condition()
        self._current, self._retired, self._thread, self._draining = None, [], None, 0
        self._checkpointing = []
        self._replays_asked = self._replays_done = 0  # the parent's kept segments are its own to replay

    def _segment(self) -> _Segment:
        if self._current is None:
            os.makedirs(self._folder, exist_ok=True)
            self._segments_begun += 1
            self._current = _Segment(self._folder, self._segments_begun)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)
            self._thread.start()
        return self._current

    # ---- checkpoints --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.recover()  # segments left by a process that ended while the store was out of reach
        except OSError as exc:
            log.error("journal.recover_failed error=%s", exc.__class__.__name__)
        while True:
            self._due.wait(self._checkpoint_seconds)
            self._due.clear()
            if self._stopping:
                return
            try:
                asked = self._replays_asked
                self.checkpoint()
                if asked != self._replays_done:
                    self.recover()  # the segments kept for replay, closed (unlocked) by the checkpoint
                    self._replays_done = asked
            except OSError as exc:
                log.error("journal.checkpoint_failed error=%s (retried; the segment stays until then)",
                          exc.__class__.__name__)
                time.sleep(self._checkpoint_seconds)

    def _retire(self) -> None:
        """The current segment takes no more appends (called with the state lock held)."""
        if self._current is not None:
            self._retired.append(self._current)
            self._current = None  # new writers start a new segment

    def checkpoint(self) -> None:
        """Make everything journaled so far durable in the files themselves, then drop the segments."""
        with self._state:
            if self._current is not None and self._current.size > 0:
                self._retire()
            segments, self._retired = self._retired, []
            self._checkpointing += segments
            self._draining += 1
            while any(segment.writers for segment in segments):
                self._state.wait()
            self._draining -= 1
        if not segments:
            return
        try:
            self._flush_all()
            for segment in segments:
                if not segment.left_to_replay:
                    _remove_segment(segment.path)
                segment.close()
        except BaseException:
            with self._state:
                self._retired = [segment for segment in segments if segment.fd >= 0] + self._retired
                self._checkpointed(segments)
            raise
        with self._state:
            self._checkpointed(segments)

    def _checkpointed(self, segments: list[_Segment]) -> None:
        """The checkpoint of ``segments`` ended (called with the state lock held)."""
        self._checkpointing = [segment for segment in self._checkpointing if segment not in segments]

    def close(self) -> None:
        """At the end of the process: a last checkpoint (an unclean end leaves the segment to ``recover``)."""
        self._stopping = True
        self._due.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.checkpoint()
        except OSError as exc:
            log.error("journal.final_checkpoint_failed error=%s (replayed at the next start)",
                      exc.__class__.__name__)

    # ---- other processes' segments -----------------------------------------------------------------------------

    def recover(self) -> int:
        """Replay and drop the segments of processes that are gone; the number of records replayed."""
        return recover(self._folder, self._replay, self._flush_all)

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Return once every segment that exists now is checkpointed or replayed (False after ``timeout``)."""
        self.checkpoint()
        waiting = set(_segments(self._folder))
        deadline = time.monotonic() + timeout
        while True:
            self.recover()
            waiting &= set(_segments(self._folder))
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _forget_parent(journal: Journal | None) -> None:
    if journal is not None:
        journal.forget_parent()


def _segments(folder: str) -> list[str]:
    try:
        return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(SEGMENT_SUFFIX))
    except FileNotFoundError:
        return []


def recover(folder: str, replay: Callable[[Record], None], flush_all: Callable[[], None]) -> int:
    remove_abandoned(folder, lambda name: name.endswith(_BEGINNING_SUFFIX))  # empty: cut before its first record
    replayed = 0
    for path in _segments(folder):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # checkpointed meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's segment, or another recovery at work
            if not os.path.exists(path):
                continue  # removed between the listing and the lock
            count = 0
            for record in read_records(path):
                replay(record)
                count += 1
            flush_all()
            _remove_segment(path)
            replayed += count
            log.warning("journal.recovered records=%d segment=%s", count, os.path.basename(path))
        finally:
            os.close(fd)
    return replayed


def _remove_segment(path: str) -> None:
    """Unlink, and make the removal durable: a segment that came back after a crash could replay a marker or an
    object that was removed since. A segment that is gone already (the store's folder was removed, or replaced by an
    empty one: a remount) has nothing left to replay."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    folder = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
