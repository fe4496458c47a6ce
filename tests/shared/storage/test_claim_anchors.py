"""Claims of one folder are names of one file in a local store (shared.storage.claim_anchors): no new file per
instance; a full anchor is followed by the next, a part-written one is replaced, and a file system without unnamed
files gets claims of their own."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from shared.storage import claim_anchors
from shared.storage.base import PutOutcome
from shared.storage.claim_anchors import ANCHORS_FOLDER, ClaimAnchors
from shared.storage.filesystem import FilesystemObjectStore

TEMPLATE = b"p-0123/1.2.3/1.2.3.4/*.dcm"


def claim(uid: str) -> str:
    return f".claims/ab/{uid}"


def anchors(root: Path) -> list[Path]:
    return sorted((root / ANCHORS_FOLDER).iterdir())


def fill_up(anchor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on ``anchor`` takes no more links (EMLINK), as when it reached the file system's limit."""
    link = os.link

    def refuse_full_anchor(source: str, destination: str, *args: object, **kwargs: object) -> None:
        if source == str(anchor):
            raise OSError(errno.EMLINK, "Too many links")
        link(source, destination, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(claim_anchors.os, "link", refuse_full_anchor)


def test_claims_of_one_content_are_links_of_one_anchor(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    for number in range(3):
        assert store.put_claim(claim(f"1.2.{number}"), TEMPLATE).outcome is PutOutcome.CREATED
    [anchor] = anchors(tmp_path)
    assert anchor.name == f"{hashlib.sha256(TEMPLATE).hexdigest()}-0"
    assert anchor.read_bytes() == TEMPLATE and anchor.stat().st_nlink == 4
    assert {(tmp_path / claim(f"1.2.{number}")).stat().st_ino for number in range(3)} == {anchor.stat().st_ino}
    assert store.get(claim("1.2.1")) == TEMPLATE


def test_a_claim_that_exists_is_identical_or_a_conflict_and_keeps_its_content(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    assert store.put_claim(claim("1.2.1"), TEMPLATE).outcome is PutOutcome.IDENTICAL
    other = store.put_claim(claim("1.2.1"), b"p-0123/9.9/9.9.9/*.dcm")
    assert other.outcome is PutOutcome.CONFLICT and other.stored_sha256 == hashlib.sha256(TEMPLATE).hexdigest()
    assert store.get(claim("1.2.1")) == TEMPLATE


def test_a_full_anchor_is_followed_by_the_next_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    first = anchors(tmp_path)[0]
    fill_up(first, monkeypatch)
    assert store.put_claim(claim("1.2.2"), TEMPLATE).outcome is PutOutcome.CREATED
    assert [path.name[-2:] for path in anchors(tmp_path)] == ["-0", "-1"]
    assert first.stat().st_nlink == 2 and anchors(tmp_path)[1].stat().st_nlink == 2
    assert store.get(claim("1.2.2")) == TEMPLATE


def test_a_claim_no_anchor_can_take_is_a_file_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = os.link

    def every_anchor_full(source: str, destination: str, *args: object, **kwargs: object) -> None:
        if ANCHORS_FOLDER in source and destination.startswith(str(tmp_path / ".claims")):
            raise OSError(errno.EMLINK, "Too many links")
        link(source, destination, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(claim_anchors.os, "link", every_anchor_full)
    store = FilesystemObjectStore(tmp_path)
    assert store.put_claim(claim("1.2.1"), TEMPLATE).outcome is PutOutcome.CREATED
    assert store.get(claim("1.2.1")) == TEMPLATE and (tmp_path / claim("1.2.1")).stat().st_nlink == 1


def test_a_file_system_without_unnamed_files_gets_claims_of_their_own(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claim_anchors, "_O_TMPFILE", 0)  # opening the folder for writing fails: EISDIR
    store = FilesystemObjectStore(tmp_path)
    assert store.put_claim(claim("1.2.1"), TEMPLATE).outcome is PutOutcome.CREATED
    assert store.get(claim("1.2.1")) == TEMPLATE and (tmp_path / claim("1.2.1")).stat().st_nlink == 1


def test_a_part_written_anchor_is_replaced_before_claims_are_linked_to_it(tmp_path: Path) -> None:
    # A crash left the anchor's name with part of its bytes; the claims linked to it are rewritten by recovery.
    torn = tmp_path / ANCHORS_FOLDER / f"{hashlib.sha256(TEMPLATE).hexdigest()}-0"
    torn.parent.mkdir()
    torn.write_bytes(TEMPLATE[:9])
    os.link(torn, tmp_path / "claim-of-before-the-crash")
    FilesystemObjectStore(tmp_path).put_claim(claim("1.2.1"), TEMPLATE)
    assert torn.read_bytes() == TEMPLATE and (tmp_path / claim("1.2.1")).read_bytes() == TEMPLATE
    assert (tmp_path / "claim-of-before-the-crash").read_bytes() == TEMPLATE[:9]


def test_an_anchor_removed_by_hand_is_made_again(tmp_path: Path) -> None:
    anchors_of_the_process = ClaimAnchors(str(tmp_path))
    (tmp_path / "a").mkdir()
    anchors_of_the_process.link(TEMPLATE, str(tmp_path / "a" / "1"))
    for anchor in anchors(tmp_path):
        anchor.unlink()
    anchors_of_the_process.link(TEMPLATE, str(tmp_path / "a" / "2"))
    assert (tmp_path / "a" / "2").read_bytes() == TEMPLATE and anchors(tmp_path)[0].stat().st_nlink == 2


def test_anchors_are_not_objects(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    assert [info.key for info in store.list("")] == [] and store.count("") == 0


def test_a_claim_folder_removed_since_it_was_cached_is_made_again(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    (tmp_path / claim("1.2.1")).unlink()
    (tmp_path / ".claims" / "ab").rmdir()
    assert store.put_claim(claim("1.2.2"), TEMPLATE).outcome is PutOutcome.CREATED
    assert store.get(claim("1.2.2")) == TEMPLATE


def test_removing_the_last_claim_of_a_content_removes_its_anchor(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    for number in range(2):
        store.put_claim(claim(f"1.2.{number}"), TEMPLATE)
    store.delete_claim(claim("1.2.0"))
    [anchor] = anchors(tmp_path)
    assert anchor.stat().st_nlink == 2  # the other claim still holds it
    store.delete_claim(claim("1.2.1"))
    assert anchors(tmp_path) == [] and store.stat(claim("1.2.1")) is None
    store.delete_claim(claim("1.2.1"))  # a missing claim: nothing to do
    assert store.put_claim(claim("1.2.2"), TEMPLATE).outcome is PutOutcome.CREATED  # a new anchor
    assert anchors(tmp_path)[0].stat().st_nlink == 2


def test_generations_without_claims_are_removed_from_the_last_one_down(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    first = anchors(tmp_path)[0]
    fill_up(first, monkeypatch)
    store.put_claim(claim("1.2.2"), TEMPLATE)  # in generation 1
    store.delete_claim(claim("1.2.1"))
    assert [path.name[-2:] for path in anchors(tmp_path)] == ["-0", "-1"]  # no gap below a generation in use
    assert first.stat().st_nlink == 1
    store.delete_claim(claim("1.2.2"))
    assert anchors(tmp_path) == []


def test_a_claim_linked_while_its_anchor_is_removed_keeps_its_content(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process links a claim between the check that the anchor has no claim and its removal."""
    store, other_process = FilesystemObjectStore(tmp_path), FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    unlink = os.unlink

    def link_first(path: str, *args: object, **kwargs: object) -> None:
        if ANCHORS_FOLDER in str(path):
            other_process.put_claim(claim("1.2.2"), TEMPLATE)
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(claim_anchors.os, "unlink", link_first)
    store.delete_claim(claim("1.2.1"))
    monkeypatch.undo()
    assert anchors(tmp_path) == [] and store.get(claim("1.2.2")) == TEMPLATE  # a file of its own now
    assert other_process.put_claim(claim("1.2.3"), TEMPLATE).outcome is PutOutcome.CREATED  # a new anchor
    assert anchors(tmp_path)[0].stat().st_nlink == 2 and store.get(claim("1.2.3")) == TEMPLATE


def test_a_claim_replaced_by_a_deletion_mark_lets_its_anchor_go_and_a_send_meanwhile_leaves_none(
        tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    store.put_claim(claim("1.2.1"), TEMPLATE)
    store.replace_claim(claim("1.2.1"), b"deleting:p-0123/1.2.3/1.2.3.4/1.2.1.dcm")
    assert anchors(tmp_path) == []
    assert store.put_claim(claim("1.2.1"), TEMPLATE).outcome is PutOutcome.CONFLICT  # the send is refused...
    assert anchors(tmp_path) == []  # ...and the anchor it made on its way is gone
