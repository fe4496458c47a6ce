"""A local-folder object store in a test's temporary folder (test_s3 and test_claims bring their own ``store``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.storage.filesystem import FilesystemObjectStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def store(root: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(root)
