"""Temporary files of writers that ended uncleanly are removed once old enough; nothing else is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import abandoned_files
from shared.abandoned_files import remove_abandoned


def is_temporary(name: str) -> bool:
    return name.startswith(".tmp-")


def test_only_old_temporary_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (".tmp-a", ".tmp-b", "marker.json"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".tmp-folder").mkdir()
    assert remove_abandoned(str(tmp_path), is_temporary) == 0  # just changed: a live writer's, maybe
    monkeypatch.setattr(abandoned_files, "ABANDONED_SECONDS", 0.0)
    assert remove_abandoned(str(tmp_path), is_temporary) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [".tmp-folder", "marker.json"]


def test_a_missing_folder_has_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_abandoned(str(tmp_path / "missing"), is_temporary) == 0
