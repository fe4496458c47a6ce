"""Direct writes (shared.storage.direct_io): the whole blocks of a large new file go around the page cache, the rest
through it; where the file system refuses, nothing is written and the caller writes as usual."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.storage import direct_io
from shared.storage.base import PartedData, PutOutcome
from shared.storage.direct_io import DIRECT_ALIGNMENT, DIRECT_MIN_BYTES, write_new_file
from shared.storage.filesystem import FilesystemObjectStore
from tests.environment import unavailable


@pytest.fixture
def new_file(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        os.close(fd)
        unavailable("the file system of the test folder refuses O_DIRECT")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
    yield fd
    os.close(fd)


def parts_of(size: int) -> list[bytes]:
    data = bytes(range(256)) * (size // 256 + 1)
    return [data[:1000], data[1000:size]]  # a header and a data set, as ingest hands them over


@pytest.mark.parametrize("size", [DIRECT_ALIGNMENT * 20, DIRECT_ALIGNMENT * 20 + 123, DIRECT_MIN_BYTES * 8 + 1])
def test_the_file_holds_exactly_its_parts(tmp_path: Path, new_file: int, size: int) -> None:
    assert write_new_file(new_file, parts_of(size)) is True
    assert (tmp_path / "new").read_bytes() == b"".join(parts_of(size))


def test_whole_blocks_go_direct_and_the_partial_last_block_through_the_page_cache(
        new_file: int, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[bool, int, int]] = []
    write = os.pwritev

    def noting(fd: int, buffers: list[memoryview], offset: int) -> int:
        writes.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), offset,
                       sum(len(buffer) for buffer in buffers)))
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", noting)
    flags = fcntl.fcntl(new_file, fcntl.F_GETFL)
    assert write_new_file(new_file, parts_of(DIRECT_ALIGNMENT * 20 + 123))
    assert writes == [(True, 0, DIRECT_ALIGNMENT * 20), (False, DIRECT_ALIGNMENT * 20, 123)]
    assert fcntl.fcntl(new_file, fcntl.F_GETFL) == flags  # O_DIRECT only for the write


def test_less_than_a_block_is_left_to_the_usual_write(tmp_path: Path, new_file: int) -> None:
    assert write_new_file(new_file, [b"short"]) is False
    assert (tmp_path / "new").read_bytes() == b""


def test_a_file_system_that_refuses_o_direct_gets_nothing_written(tmp_path: Path, new_file: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_fcntl = fcntl.fcntl

    def refusing(fd: int, command: int, argument: int = 0) -> int:
        if command == fcntl.F_SETFL and argument & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # tmpfs
        return real_fcntl(fd, command, argument)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    assert write_new_file(new_file, parts_of(DIRECT_MIN_BYTES)) is False
    assert (tmp_path / "new").read_bytes() == b""


def test_a_refused_direct_write_gets_nothing_written_and_the_descriptor_back_as_it_was(
        tmp_path: Path, new_file: int, monkeypatch: pytest.MonkeyPatch) -> None:
    write = os.pwritev

    def refusing(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", refusing)
    flags = fcntl.fcntl(new_file, fcntl.F_GETFL)
    assert write_new_file(new_file, parts_of(DIRECT_MIN_BYTES)) is False
    assert (tmp_path / "new").read_bytes() == b"" and fcntl.fcntl(new_file, fcntl.F_GETFL) == flags


def test_a_failing_disk_is_an_error_not_a_fallback(new_file: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int, buffers: list[memoryview], offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", failing)
    with pytest.raises(OSError) as raised:
        write_new_file(new_file, parts_of(DIRECT_MIN_BYTES))
    assert raised.value.errno == errno.ENOSPC


def test_buffers_are_reused_so_their_pages_stay_in_memory() -> None:
    buffers = direct_io.AlignedBuffers()
    first = buffers.take(DIRECT_MIN_BYTES)
    buffers.give(first)
    assert buffers.take(DIRECT_MIN_BYTES - 1) is first
    assert buffers.take(DIRECT_MIN_BYTES) is not first  # taken: a new one


def test_few_buffers_of_bounded_size_are_kept() -> None:
    buffers = direct_io.AlignedBuffers()
    huge = buffers.take(16 << 20)  # an object held in memory up to the SCP's spool threshold
    buffers.give(huge)
    assert huge.closed and buffers.take(16 << 20) is not huge
    taken = [buffers.take(DIRECT_MIN_BYTES) for _ in range(6)]
    for buffer in taken:
        buffers.give(buffer)
    assert sum(not buffer.closed for buffer in taken) == 4


def test_a_large_object_of_the_store_is_written_direct_and_reads_back_whole(tmp_path: Path, new_file: int,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    direct: list[int] = []
    real = direct_io.write_new_file

    def noting(fd: int, parts: list[bytes]) -> bool:
        written = real(fd, parts)
        direct.append(written)
        return written

    monkeypatch.setattr(direct_io, "write_new_file", noting)
    store = FilesystemObjectStore(tmp_path / "objects")
    header, data_set = parts_of(DIRECT_MIN_BYTES * 8 + 77)
    whole = header + data_set
    result = store.put_new("1.2/1.dcm", PartedData((header, data_set)), hashlib.sha256(whole).hexdigest())
    assert result.outcome is PutOutcome.CREATED
    store.put_new("1.2/2.dcm", b"small", hashlib.sha256(b"small").hexdigest())
    assert store.get("1.2/1.dcm") == whole and store.get("1.2/2.dcm") == b"small"
    assert direct == [True]  # the large one, around the page cache; the small one is not offered
    store.close()


def written_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "object"
    path.write_bytes(b"".join(parts_of(size)))  # through the page cache, not flushed: read back all the same
    return path


def test_the_head_of_a_file_is_read_around_the_page_cache(tmp_path: Path, new_file: int) -> None:
    path = written_file(tmp_path, DIRECT_MIN_BYTES * 3 + 5)
    with open(path, "rb") as stream:
        flags = fcntl.fcntl(stream.fileno(), fcntl.F_GETFL)
        with direct_io.read_head(stream.fileno(), DIRECT_MIN_BYTES + 10) as head:
            assert head is not None and bytes(head) == path.read_bytes()[:DIRECT_MIN_BYTES + 10]
        with direct_io.read_head(stream.fileno(), DIRECT_MIN_BYTES * 4) as whole:
            assert whole is not None and bytes(whole) == path.read_bytes()  # fewer: the file is shorter
        assert fcntl.fcntl(stream.fileno(), fcntl.F_GETFL) == flags


def test_what_was_read_is_not_usable_after_the_block(tmp_path: Path, new_file: int) -> None:
    path = written_file(tmp_path, DIRECT_MIN_BYTES)
    with open(path, "rb") as stream:
        with direct_io.read_head(stream.fileno(), DIRECT_MIN_BYTES) as head:
            assert head is not None
        with pytest.raises(ValueError):
            bytes(head)  # its buffer went back to the pool for the next read


def test_a_file_system_that_refuses_direct_reads_gets_none(tmp_path: Path, new_file: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = written_file(tmp_path, DIRECT_MIN_BYTES)
    real_fcntl = fcntl.fcntl

    def refusing(fd: int, command: int, argument: int = 0) -> int:
        if command == fcntl.F_SETFL and argument & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, command, argument)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    with open(path, "rb") as stream, direct_io.read_head(stream.fileno(), DIRECT_MIN_BYTES) as head:
        assert head is None
