"""``stage_new`` of the local store: a large object is durable in the journal when the stage returns (the C-STORE
answer may go), and its file is written and named by ``publish`` (after the answer). Whatever happens in between,
the object ends up under its key: named by ``publish``, or by the journal's replay."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.storage.base import PartedData, PutOutcome, StorageFull, StorageUnavailable
from shared.storage.direct_io import DIRECT_MIN_BYTES
from shared.storage.filesystem import _NewFile, FilesystemObjectStore
from shared.storage.journal import JOURNAL_FOLDER, read_records
from tests.stamps import require_stamps

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
REPO = Path(__file__).resolve().parents[3]
LARGE = bytes(range(256)) * (DIRECT_MIN_BYTES // 256 + 40)  # a CT slice's size class: written around the page cache
OTHER = LARGE[::-1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def journaled_keys(root: Path) -> list[str]:
    return [record.key for path in sorted((root / JOURNAL_FOLDER).glob("*.wal")) for record in read_records(str(path))]


def test_a_large_object_is_journaled_by_the_stage_and_named_by_publish(store: FilesystemObjectStore, root: Path,
                                                                      tmp_path: Path) -> None:
    require_stamps(tmp_path)
    staged = store.stage_new(KEY, PartedData((LARGE[:132], LARGE[132:])), sha(LARGE))

    assert staged.result.outcome is PutOutcome.CREATED
    assert store.stat(KEY) is None  # not under its key yet
    assert KEY in journaled_keys(root)  # but durable: in the flushed journal
    published = staged.publish()

    assert published.outcome is PutOutcome.CREATED and published.stored_sha256 == sha(LARGE)
    assert (root / KEY).read_bytes() == LARGE
    with store.open(KEY) as stream:
        assert published.stamp is not None and store.stamp(stream) == published.stamp
    assert staged.publish() == published  # once: a second call tells the same


@pytest.mark.parametrize("content", [b"small object", None], ids=["small", "existing_key"])
def test_small_objects_and_re_sends_are_put_at_once(store: FilesystemObjectStore, content: bytes | None) -> None:
    if content is None:
        store.put_new(KEY, LARGE, sha(LARGE))
        content = LARGE
    staged = store.stage_new(KEY, content, sha(content))

    assert store.get(KEY) == content  # before publish
    assert staged.publish() == staged.result


def test_no_checkpoint_drops_the_record_before_the_object_is_named(store: FilesystemObjectStore, root: Path) -> None:
    staged = store.stage_new(KEY, LARGE, sha(LARGE))
    checkpoint = threading.Thread(target=store._journal.checkpoint)
    checkpoint.start()
    checkpoint.join(timeout=0.5)

    assert checkpoint.is_alive() and KEY in journaled_keys(root)  # it waits for the staged object
    staged.publish()
    checkpoint.join(timeout=10)
    assert not checkpoint.is_alive() and journaled_keys(root) == [] and store.get(KEY) == LARGE


STAGED_THEN_GONE = """
import hashlib, os, sys
from pathlib import Path
from shared.storage.filesystem import FilesystemObjectStore
data = bytes(range(256)) * 400
FilesystemObjectStore(Path(sys.argv[1])).stage_new(sys.argv[2], data, hashlib.sha256(data).hexdigest())
os._exit(0)  # answered, then gone before the object was named
"""


def test_a_process_gone_between_the_stage_and_publish_leaves_the_object_to_recovery(root: Path) -> None:
    subprocess.run([sys.executable, "-c", STAGED_THEN_GONE, str(root), KEY], cwd=REPO, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert not (root / KEY).exists()

    FilesystemObjectStore(root).recover()

    assert (root / KEY).read_bytes() == bytes(range(256)) * 400


@pytest.mark.parametrize("other, outcome", [(LARGE, PutOutcome.IDENTICAL), (OTHER, PutOutcome.CONFLICT)],
                         ids=["identical", "conflict"])
def test_a_key_another_send_took_meanwhile_keeps_that_send_and_publish_tells_so(
        store: FilesystemObjectStore, other: bytes, outcome: PutOutcome) -> None:
    staged = store.stage_new(KEY, LARGE, sha(LARGE))
    assert store.put_new(KEY, other, sha(other)).outcome is PutOutcome.CREATED  # named first

    published = staged.publish()

    assert (published.outcome, published.stored_sha256, published.stamp) == (outcome, sha(other), None)
    assert store.get(KEY) == other


def test_a_full_disk_fails_the_stage_before_the_object_is_journaled(store: FilesystemObjectStore, root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(StorageFull):
        store.stage_new(KEY, LARGE, sha(LARGE))
    assert KEY not in journaled_keys(root)  # nobody is told it is stored: nothing to bring back either


def test_an_object_publish_cannot_name_is_named_by_the_journal_replay(store: FilesystemObjectStore, root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_hint(".pending/1.2.3.4.5.json", b"marker")  # journaled beside the object, as a pending marker is
    staged = store.stage_new(KEY, LARGE, sha(LARGE))
    write_reserved = _NewFile.write_reserved

    def failing_write(self: _NewFile, parts: list[bytes]) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_NewFile, "write_reserved", failing_write)
    with pytest.raises(StorageUnavailable):
        staged.publish()
    monkeypatch.setattr(_NewFile, "write_reserved", write_reserved)
    with pytest.raises(StorageUnavailable):
        staged.publish()  # once: its file is closed, and the journal's replay names the object
    (root / ".pending/1.2.3.4.5.json").unlink()  # the indexer was done with it meanwhile

    deadline = time.monotonic() + 15  # the checkpointer replays the kept segments (every CHECKPOINT_SECONDS)
    while not (root / KEY).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (root / KEY).read_bytes() == LARGE
    assert (root / ".pending/1.2.3.4.5.json").read_bytes() == b"marker"  # replays write everything again
    while journaled_keys(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert journaled_keys(root) == []  # and the replayed segment is gone
