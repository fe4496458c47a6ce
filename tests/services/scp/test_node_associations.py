"""NodeAssociations: the SCP processes sharing a data directory hold max_associations together."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from services.scp import node_associations
from services.scp.node_associations import TABLE_NAME, NodeAssociations


def _admit_in_another_process(data_dir: Path, own: int, limit: int, answer: "multiprocessing.Queue[bool]") -> None:
    table = NodeAssociations(data_dir)
    answer.put(table.admit(own, limit))  # the process ends without leaving: its row stays until stale


def admitted_elsewhere(data_dir: Path, own: int, limit: int) -> bool:
    answer: multiprocessing.Queue[bool] = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_admit_in_another_process,
                                                           args=(data_dir, own, limit, answer))
    process.start()
    process.join(30)
    return answer.get(timeout=5)


def test_the_other_processes_counts_are_added_to_this_ones(tmp_path: Path) -> None:
    here = NodeAssociations(tmp_path)
    assert admitted_elsewhere(tmp_path, own=2, limit=4)  # another process now holds 3
    assert not here.admit(own=1, limit=4)  # 1 + 3 = 4: full
    assert here.admit(own=0, limit=4)  # 0 + 3 < 4: the fourth
    assert not here.admit(own=1, limit=4)


def test_an_ended_association_frees_its_place_for_the_others(tmp_path: Path) -> None:
    first, second = NodeAssociations(tmp_path), NodeAssociations(tmp_path)
    second._pid = "other"  # two processes' rows, in one test process
    assert first.admit(own=1, limit=2)
    assert not second.admit(own=0, limit=2)
    first.report(own=0)
    assert second.admit(own=0, limit=2)


def test_a_row_not_written_for_a_while_no_longer_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert admitted_elsewhere(tmp_path, own=3, limit=4)
    here = NodeAssociations(tmp_path)
    assert not here.admit(own=0, limit=4)
    now = time.time
    monkeypatch.setattr(node_associations.time, "time", lambda: now() + node_associations.STALE_SECONDS + 1)
    assert here.admit(own=0, limit=4)


def test_a_process_that_stops_removes_its_row(tmp_path: Path) -> None:
    here = NodeAssociations(tmp_path)
    here.admit(own=0, limit=4)
    here.stop()
    assert json.loads((tmp_path / TABLE_NAME).read_text()) == {}


def test_an_unreadable_table_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / TABLE_NAME).write_text("{not json")
    here = NodeAssociations(tmp_path)
    assert here.admit(own=0, limit=1)
    assert list(json.loads((tmp_path / TABLE_NAME).read_text()).values())[0][0] == 1


def test_the_refresh_writes_the_count_every_second(tmp_path: Path) -> None:
    here = NodeAssociations(tmp_path)
    here.start(lambda: here.report(5))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = json.loads((tmp_path / TABLE_NAME).read_text()) if (tmp_path / TABLE_NAME).exists() else {}
            if [row[0] for row in rows.values()] == [5]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the count was not written")
    finally:
        here.stop()
