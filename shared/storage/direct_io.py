"""Writes that go around the page cache (``O_DIRECT``), for the large new files of the local store: an object of a
CT slice or more, and its journal record.

Copying into new page-cache pages is the costliest part of writing a large object on the machine the benchmarks run
on (a VM that hands freed memory back to its host, so new pages are memory the host must provide again): with four
associations pushing 526 KB instances, ``copy_folio_from_iter_atomic`` took 18 % of both cores, about 1 ms per
instance, for the object and its journal record. Nothing reads those bytes back soon (the indexer reads the first
64 KiB once; a retrieval reads the object later, from the disk on any busy node), so they are written from a
page-aligned buffer of this process straight to the disk. The buffers are reused, so their pages stay in memory and
copying into them costs what copying in cache does.

Reading such a file back soon after (the indexer's first 64 KiB, a C-MOVE or C-GET right after the push) is done
the same way, into a reused buffer: the bytes are not in the page cache, and reading them through it would cost
the same new pages that writing them around it saved.

Whole DIRECT_ALIGNMENT blocks go direct; the partial block at the end of a file goes through the page cache as usual
(its page holds nothing else). ``O_DIRECT`` is set on the file's descriptor for the write only (Linux lets
``fcntl`` change it) and where the file system refuses it (tmpfs), or refuses the write, the file is written as
usual. Durability is unchanged: what must be durable is flushed as before (``fdatasync`` of the journal, which also
flushes the disk's cache).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from shared.file_writes import write_at

DIRECT_ALIGNMENT = 4096  # of a direct write's offset and length: a multiple of the disk's block size
DIRECT_MIN_BYTES = 64 << 10  # smaller files are written through the page cache (their pages are reused anyway)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_BUFFERS_KEPT = 4
_KEPT_MAX_BYTES = (4 << 20) + (64 << 10)  # a larger buffer (a rare object of up to 16 MiB) is not kept: memory


def aligned(offset: int) -> int:
    """``offset`` rounded up to a block boundary."""
    return -(-offset // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT


class AlignedBuffers:
    """Page-aligned buffers (anonymous mappings), reused so that their pages stay in memory: at most _BUFFERS_KEPT
    of at most _KEPT_MAX_BYTES each (a CT slice, a journal record) are kept between writes."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            for index, buffer in enumerate(self._free):
                if len(buffer) >= size:
                    return self._free.pop(index)
        return mmap.mmap(-1, aligned(size))

    def give(self, buffer: mmap.mmap) -> None:
        if len(buffer) > _KEPT_MAX_BYTES:
            buffer.close()
            return
        with self._lock:
            self._free.append(buffer)
            if len(self._free) > _BUFFERS_KEPT:
                self._free.sort(key=len)
                self._free.pop(0).close()

    def _forget(self) -> None:
        self._free, self._lock = [], threading.Lock()


buffers = AlignedBuffers()


def copy_into(buffer: mmap.mmap, parts: Sequence[bytes]) -> int:
    """``parts`` one after another from the buffer's start; their length."""
    offset = 0
    for part in parts:
        buffer[offset:offset + len(part)] = part
        offset += len(part)
    return offset


def write_blocks(fd: int, buffer: mmap.mmap, length: int, offset: int) -> None:
    """The first ``length`` bytes of ``buffer`` (whole blocks) at ``offset`` of a descriptor opened or set for
    O_DIRECT; OSError as the system call raises it (EINVAL: refused)."""
    with memoryview(buffer) as view:
        done = 0
        while done < length:
            count = os.pwritev(fd, [view[done:length]], offset + done)
            if count <= 0 or count % DIRECT_ALIGNMENT:
                raise OSError(errno.EIO, "short direct write")
            done += count


def open_direct(path: str) -> int | None:
    """A second descriptor of ``path`` for direct writes, or None where the file system refuses them."""
    if not _O_DIRECT:
        return None
    try:
        return os.open(path, os.O_WRONLY | _O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None


def write_new_file(fd: int, parts: Sequence[bytes]) -> bool:
    """The whole content of a new, empty file: its whole blocks direct, the rest through the page cache. False,
    with nothing written, where the file system refuses direct writes."""
    total = sum(len(part) for part in parts)
    whole = total // DIRECT_ALIGNMENT * DIRECT_ALIGNMENT
    if not whole:
        return False
    buffer: mmap.mmap | None = None
    try:
        with _direct_mode(fd) as direct:
            if not direct:
                return False  # before any copy: a file system without O_DIRECT costs one fcntl call per object
            buffer = buffers.take(total)
            copy_into(buffer, parts)
            try:
                write_blocks(fd, buffer, whole, 0)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                return False
        if total > whole:
            with memoryview(buffer) as view:
                write_at(fd, [view[whole:total]], whole)
        return True
    finally:
        if buffer is not None:
            buffers.give(buffer)


@contextmanager
def read_head(fd: int, length: int) -> Iterator[memoryview | None]:
    """The first ``length`` bytes of a file (fewer if it is shorter), read around the page cache into a reused
    buffer; valid inside the block only. None where the file system refuses direct reads (read as usual then)."""
    buffer = buffers.take(length)
    try:
        count: int | None = None
        with _direct_mode(fd) as direct:
            if direct:
                try:
                    count = _read_blocks(fd, buffer, aligned(length))
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
        if count is None:
            yield None
            return
        with memoryview(buffer) as view:
            head = view[:min(count, length)]
            try:
                yield head
            finally:
                head.release()  # whatever the caller kept of it: the buffer goes back to the pool
    finally:
        buffers.give(buffer)


@contextmanager
def _direct_mode(fd: int) -> Iterator[bool]:
    """O_DIRECT set on ``fd`` for the block (False where the file system refuses it), its flags as before after."""
    if not _O_DIRECT:
        yield False
        return
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        yield False
        return
    try:
        yield True
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _read_blocks(fd: int, buffer: mmap.mmap, length: int) -> int:
    """Up to ``length`` bytes (whole blocks) from the file's start; what was read (less at its end)."""
    with memoryview(buffer) as view:
        done = 0
        while done < length:
            count = os.preadv(fd, [view[done:length]], done)
            done += count
            if count <= 0 or count % DIRECT_ALIGNMENT:
                break  # the end of the file
        return done
