"""Anchors: one file per claim content, which the claims of that content are hard links to.

A claim (shared.storage.claims) is a file per SOP Instance UID, and most claims of a folder hold the same content:
``<folder>/*.dcm``, the folder their objects are in. Written as files of their own, claims cost a new inode per
instance stored: creating a small file took 25-217 us of system time on the benchmark machine, depending on the
state of its block group, and the SCP spent 0.2-0.9 ms more CPU per instance with claims written so than with no
claim at all (bench/README.md, session 18). Here a claim is a new name of the anchor of its content instead: one
``link`` per instance, one inode per folder.

Anchors live in ``.anchors/`` at the store's root, named by the SHA-256 of their content and a generation: a file
system limits the links of one inode (ext4: 65,000), and a full anchor (EMLINK) is followed by the next
generation. An anchor is written unnamed and then linked (``O_TMPFILE``; without it there are no anchors and every
claim is a file of its own), and is checked once per process before claims are linked to it: a crash may have left
its name with part of its bytes. One that holds anything else than its content is replaced; the claims linked to
the old one keep it, and their journal records (still there: no checkpoint made that anchor durable) rewrite them
at recovery. Replacing or removing a claim (``FilesystemObjectStore.replace_claim``, ``delete_claim``: a deletion
marks the claim, then removes it) removes the anchors of the content it held that no claim is linked to any more (a
generation below one that still has claims waits for it), and so does a claim refused because its key is taken:
a deleted folder leaves no anchor behind. A claim linked at that very moment by another process keeps its inode and
content: it becomes a file of its own, and the next claim makes a new anchor.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import threading

ANCHORS_FOLDER = ".anchors"
MAX_CLAIM_BYTES = 4096  # a claim holds a key or a folder's template; anything longer is not one
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_REMEMBERED_MAX = 10_000


class NoAnchor(Exception):
    """No anchor can take this claim (every generation tried is full, or the file system cannot make one): the claim
    is written as a file of its own."""


class ClaimAnchors:
    def __init__(self, root: str) -> None:
        self._folder = os.path.join(root, ANCHORS_FOLDER)
        self._checked: dict[bytes, tuple[int, str]] = {}  # content -> (generation, anchor) this process links to
        self._lock = threading.Lock()

    def link(self, content: bytes, path: str) -> None:
        """Name ``path`` as another link of the anchor of ``content``; FileExistsError if ``path`` exists (an anchor
        made for it is removed again)."""
        made = False
        for _ in range(3):
            generation, anchor, written = self._anchor(content)
            made = made or written
            try:
                os.link(anchor, path)
                return
            except FileExistsError:
                if made:
                    self.remove_unused(content)
                raise
            except OSError as exc:
                if exc.errno == errno.EMLINK:
                    made = self._checked_anchor(content, generation + 1)[2] or made
                elif exc.errno == errno.ENOENT and not os.path.exists(anchor):
                    self._forget(content)  # removed (by a deletion, or by hand): made again
                else:
                    raise
        raise NoAnchor("no anchor could take another link")

    def remove_unused(self, content: bytes) -> None:
        """Remove the generations of the anchor of ``content`` that no claim is linked to, from the last one down to
        the first that still has claims: the generations left stay numbered from 0 without a gap, as ``link`` walks
        them."""
        generations: list[tuple[str, int]] = []
        for generation in itertools.count():
            anchor = self._path_of(content, generation)
            try:
                generations.append((anchor, os.stat(anchor).st_nlink))
            except FileNotFoundError:
                break
        for anchor, links in reversed(generations):
            if links > 1:
                return
            self._forget(content)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(anchor)

    def _anchor(self, content: bytes) -> tuple[int, str, bool]:
        """(generation, anchor, whether this call wrote it)."""
        with self._lock:
            checked = self._checked.get(content)
        return (*checked, False) if checked is not None else self._checked_anchor(content, 0)

    def _forget(self, content: bytes) -> None:
        with self._lock:
            self._checked.pop(content, None)

    def _checked_anchor(self, content: bytes, generation: int) -> tuple[int, str, bool]:
        anchor = self._path_of(content, generation)
        written = not _holds(anchor, content)
        if written:
            self._write(anchor, content)
        with self._lock:
            if len(self._checked) >= _REMEMBERED_MAX:
                self._checked.clear()
            self._checked[content] = (generation, anchor)
        return generation, anchor, written

    def _path_of(self, content: bytes, generation: int) -> str:
        return os.path.join(self._folder, f"{hashlib.sha256(content).hexdigest()}-{generation}")

    def _write(self, anchor: str, content: bytes) -> None:
        """The anchor holds ``content`` from now on; durable with the store's next checkpoint, as the claims' names
        are (until then their journal records stand for them). Written unnamed and then linked, so that no reader
        sees it part-written and no temporary file is left."""
        os.makedirs(self._folder, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self._folder, os.O_WRONLY | _O_TMPFILE, 0o644)
            except OSError as exc:
                raise NoAnchor("this file system has no unnamed files") from exc
            try:
                os.write(fd, content)
                try:
                    os.link(f"/proc/self/fd/{fd}", anchor, src_dir_fd=fd, follow_symlinks=True)
                    return
                except FileExistsError:
                    if _holds(anchor, content):
                        return  # another process wrote it meanwhile
                    os.unlink(anchor)  # part-written before a crash: replaced
            finally:
                os.close(fd)
        raise NoAnchor("the anchor kept changing")


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(len(content) + 1) == content
    except FileNotFoundError:
        return False
