"""A local file's stamp tells it from every other file that had its name, or is None where it cannot."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest

from tests.stamps import require_stamps, stamp_of_path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    require_stamps(tmp_path)
    return tmp_path


def test_a_file_keeps_its_stamp_while_nothing_changes_it(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp_of_path(folder / "a")
    (folder / "a").read_bytes()
    assert stamp_of_path(folder / "a") == first


def test_another_file_under_the_same_name_has_another_stamp(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp_of_path(folder / "a")
    (folder / "a").unlink()
    (folder / "a").write_bytes(b"content")
    assert stamp_of_path(folder / "a") != first


def test_a_grown_file_has_another_stamp(folder: Path) -> None:
    (folder / "a").write_bytes(b"content")
    first = stamp_of_path(folder / "a")
    with (folder / "a").open("ab") as stream:
        stream.write(b"!")
    assert stamp_of_path(folder / "a") != first


def test_a_file_system_without_inode_generations_gives_no_stamp(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_generations(fd: int, request: int, argument: bytes) -> bytes:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")  # as tmpfs or overlayfs answer

    monkeypatch.setattr(fcntl, "ioctl", no_generations)
    (tmp_path / "a").write_bytes(b"content")
    assert stamp_of_path(tmp_path / "a") is None  # an inode number and a change time alone could be another file's
