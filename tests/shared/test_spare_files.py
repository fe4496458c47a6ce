"""Spare files: a file given back is taken again by the next writer, with its inode, exactly once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from shared.spare_files import SPARE_MAX_BYTES, SpareFiles


def _file(path: Path, content: bytes = b"marker") -> Path:
    path.write_bytes(content)
    return path


def test_a_given_file_is_taken_back_with_its_inode(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"))
    given = _file(tmp_path / "old.json")
    inode = given.stat().st_ino
    assert spares.give(str(given), given.stat().st_size)
    assert not given.exists()
    assert spares.take(str(tmp_path / "new.tmp"))
    assert (tmp_path / "new.tmp").stat().st_ino == inode
    assert list((tmp_path / "spare").iterdir()) == []


def test_the_spare_folder_is_created_by_the_first_gift(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"))
    given = _file(tmp_path / "old.json")
    assert spares.give(str(given), 6)
    assert len(list((tmp_path / "spare").iterdir())) == 1


def test_there_is_nothing_to_take_from_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert not SpareFiles(str(tmp_path / "missing")).take(str(tmp_path / "new.tmp"))
    (tmp_path / "empty").mkdir()
    assert not SpareFiles(str(tmp_path / "empty")).take(str(tmp_path / "new.tmp"))
    assert not (tmp_path / "new.tmp").exists()


def test_a_spare_given_by_another_process_is_found_by_listing(tmp_path: Path) -> None:
    giver, taker = SpareFiles(str(tmp_path / "spare")), SpareFiles(str(tmp_path / "spare"))
    given = _file(tmp_path / "old.json")
    giver.give(str(given), 6)
    assert taker.take(str(tmp_path / "new.tmp"))


def test_a_large_file_is_not_kept(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"))
    large = _file(tmp_path / "large", b"x" * (SPARE_MAX_BYTES + 1))
    assert not spares.give(str(large), SPARE_MAX_BYTES + 1)
    assert large.exists()


def test_past_its_capacity_the_folder_keeps_no_more(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"), capacity=3)
    kept = [spares.give(str(_file(tmp_path / f"f{number}")), 6) for number in range(5)]
    assert kept == [True, True, True, False, False]
    assert len(list((tmp_path / "spare").iterdir())) == 3


def test_giving_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    spares = SpareFiles(str(tmp_path / "spare"))
    try:
        spares.give(str(tmp_path / "gone"), 6)
    except FileNotFoundError:
        return
    raise AssertionError("a missing file was kept as a spare")


def test_concurrent_takers_take_each_spare_exactly_once(tmp_path: Path) -> None:
    folder = tmp_path / "spare"
    folder.mkdir()
    for number in range(200):
        _file(folder / f"s{number}")
    takers = [SpareFiles(str(folder)) for _ in range(4)]  # as in four processes: each lists the folder itself
    taken: list[list[str]] = [[] for _ in takers]

    def take_all(index: int) -> None:
        while True:
            target = tmp_path / f"t{index}-{len(taken[index])}"
            if not takers[index].take(str(target)):
                return
            taken[index].append(target.name)

    threads = [threading.Thread(target=take_all, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(names) for names in taken) == 200
    assert os.listdir(folder) == []
