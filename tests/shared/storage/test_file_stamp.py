"""A local file's stamp tells it from every other file that had its name, or is None where it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.storage.file_stamp import file_stamp


def stamp(path: Path) -> str | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return file_stamp(fd)
    finally:
        os.close(fd)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "probe").write_bytes(b"")
    if stamp(tmp_path / "probe") is None:
        pytest.skip("the temporary folder's file system keeps no inode generations")
    return tmp_path


def test_a_file_keeps_its_stamp_while_nothing_changes_it(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp(folder / "a")
    (folder / "a").read_bytes()
    assert stamp(folder / "a") == first


def test_another_file_under_the_same_name_has_another_stamp(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp(folder / "a")
    (folder / "a").unlink()
    (folder / "a").write_bytes(b"content")
    assert stamp(folder / "a") != first


def test_a_grown_file_has_another_stamp(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp(folder / "a")
    with (folder / "a").open("ab") as stream:
        stream.write(b"!")
    assert stamp(folder / "a") != first


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm (tmpfs) here")
def test_a_file_system_without_inode_generations_gives_no_stamp() -> None:
    path = Path("/dev/shm") / f"pacs-stamp-{os.getpid()}"
    path.write_bytes(b"")
    try:
        assert stamp(path) is None  # tmpfs: an inode number and a change time alone could be another file's
    finally:
        path.unlink()
