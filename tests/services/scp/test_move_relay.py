"""The relay of a C-MOVE waits for its job's progress: a ring from a mover of the same data directory ends the wait
at once; where no doorbell can be listed, it sleeps and looks again."""

from __future__ import annotations

import time
from pathlib import Path

from services.scp.move import progress_waits
from shared.jobs import progress_doorbells, ring_progress


def test_a_ring_from_a_mover_of_the_same_data_directory_ends_the_wait_at_once(tmp_path: Path) -> None:
    with progress_waits(progress_doorbells(tmp_path)) as progress_rung:
        ring_progress(tmp_path)
        started = time.monotonic()
        assert progress_rung(30.0)  # rung: it does not wait the 30 s
        assert time.monotonic() - started < 10.0
        assert not progress_rung(0.05)  # nothing since


def test_the_wait_is_a_plain_sleep_where_no_doorbell_can_be_listed(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with progress_waits(str(blocked / "doorbells")) as progress_rung:
        assert progress_rung is time.sleep


def test_a_wait_that_ended_removes_its_doorbell(tmp_path: Path) -> None:
    folder = Path(progress_doorbells(tmp_path))
    with progress_waits(str(folder)):
        assert len(list(folder.iterdir())) == 1
    assert list(folder.iterdir()) == []
