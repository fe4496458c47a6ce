"""Whole buffers written at an offset, whatever the system writes at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.file_writes import write_at


def test_parts_are_written_one_after_another_from_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_WRONLY)
    try:
        assert write_at(fd, [b"ab", b"", memoryview(b"cd")], 3) == 7
    finally:
        os.close(fd)
    assert path.read_bytes() == b"012abcd789"


def test_short_writes_are_continued_until_everything_is_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pwritev = os.pwritev
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, offset: pwritev(fd, [b"".join(buffers)[:3]], offset))
    fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT)
    try:
        assert write_at(fd, [b"first part, ", b"second part"], 0) == 23
    finally:
        os.close(fd)
    assert (tmp_path / "file").read_bytes() == b"first part, second part"
