"""Object store in a local folder: write a temporary file, flush, link it into place, flush.

Durability comes only from the store's SyncBarrier (``syncfs``, one flush shared by every thread storing at that
moment; see shared.storage.sync_barrier), never from an fsync per file or folder. A durable ``put_new`` flushes
twice: after the temporary file is written, so a name never reaches the disk before its bytes (a crash cannot
leave a torn object under its key), and after the link, so the name is durable on return. Each flush also makes
durable every write the store made before it: the claim and the pending marker that ingest writes just before
the object without a flush of their own (``put_new(durable=False)``, ``put_hint``) are durable before the object's
name exists, and new folders are durable with their first object.

New files are written as unnamed files (``O_TMPFILE``) and given their name by ``linkat``: no temporary name to
create and remove, and nothing left behind by a crash. Where the file system has no ``O_TMPFILE``, a named
temporary file (``.tmp-…``, skipped by ``list``) is written and linked instead.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from shared.digest import read_chunks, size_and_sha256
from shared.storage.base import (
    ObjectData,
    ObjectInfo,
    ObjectNotFound,
    PutOutcome,
    PutResult,
    StorageFull,
    StorageUnavailable,
    chunks_of,
    validate_key,
)
from shared.storage.sync_barrier import SyncBarrier

_TMP_PREFIX = ".tmp-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"object store full: {os.strerror(exc.errno or 0)}")
    return StorageUnavailable(f"object store unavailable: {exc.strerror or exc.__class__.__name__}")


def _sha256_of_file(path: str) -> str:
    with open(path, "rb") as stream:
        return size_and_sha256(read_chunks(stream))[1]


class _NewFile:
    """The content of a file about to get its name: an unnamed file (O_TMPFILE), or a named temporary one."""

    def __init__(self, directory: str) -> None:
        self.temp_path: str | None = None
        if _tmpfile_supported:
            try:
                self.fd = os.open(directory, os.O_WRONLY | _O_TMPFILE, 0o644)
                return
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE_ERRNOS:
                    raise
                _no_tmpfile()
        self.temp_path = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        self.fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def write(self, data: ObjectData) -> None:
        for chunk in chunks_of(data):
            view = memoryview(chunk)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]

    def link(self, path: str) -> None:
        """Give the file its name; FileExistsError if the name is taken (never replaced)."""
        if self.temp_path is None:
            self._link_unnamed(path)
        else:
            os.link(self.temp_path, path)

    def _link_unnamed(self, path: str) -> None:
        # linkat(..., AT_SYMLINK_FOLLOW) on the /proc link of the descriptor. Python calls linkat only when a
        # directory descriptor is given; the source path is absolute, so the kernel ignores which one.
        os.link(f"/proc/self/fd/{self.fd}", path, src_dir_fd=self.fd, follow_symlinks=True)

    def replace(self, path: str) -> None:
        """Give the file its name, replacing whatever had it."""
        if self.temp_path is not None:
            os.replace(self.temp_path, path)
            self.temp_path = None
            return
        try:
            self.link(path)
        except FileExistsError:  # an unnamed file cannot be renamed over another: via a named one
            temp = os.path.join(os.path.dirname(path), f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            self._link_unnamed(temp)
            os.replace(temp, path)

    def close(self) -> None:
        os.close(self.fd)
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except OSError:
                pass


_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_NO_TMPFILE_ERRNOS = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # the file system has no O_TMPFILE
_tmpfile_supported = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")


def _no_tmpfile() -> None:
    global _tmpfile_supported
    _tmpfile_supported = False


class FilesystemObjectStore:
    """Objects are files below ``root``; a key is a relative path of validated components."""

    def __init__(self, root: Path, barrier: SyncBarrier | None = None) -> None:
        self.root = root
        self._root = str(root)
        self.description = root.as_uri()
        self._known_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._barrier = barrier or SyncBarrier(root)

    def _path(self, key: str) -> str:
        return os.path.join(self._root, validate_key(key))

    def _ensure_dir(self, directory: str) -> None:
        """Create ``directory`` (and parents); they become durable with the next flush."""
        if directory in self._known_dirs:
            return
        missing: list[str] = []
        probe = directory
        while not os.path.isdir(probe):
            missing.append(probe)
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if not os.path.isdir(folder):
                    raise
        with self._dirs_lock:
            if len(self._known_dirs) > 100_000:
                self._known_dirs.clear()
            self._known_dirs.add(directory)

    def _new_file(self, directory: str, data: ObjectData) -> _NewFile:
        new = _NewFile(directory)
        try:
            new.write(data)
        except BaseException:
            new.close()
            raise
        return new

    def _new_file_in(self, directory: str, data: ObjectData) -> _NewFile:
        try:
            self._ensure_dir(directory)
            return self._new_file(directory, data)
        except FileNotFoundError:
            # The folder vanished since it was cached (e.g. a remount): create it again, once.
            with self._dirs_lock:
                self._known_dirs.discard(directory)
            self._ensure_dir(directory)
            return self._new_file(directory, data)

    def put_new(self, key: str, data: ObjectData, sha256: str, durable: bool = True) -> PutResult:
        path = self._path(key)
        new: _NewFile | None = None
        try:
            existing: str | None = None
            if os.path.exists(path):  # a re-send: nothing to write
                existing = _sha256_of_file(path)
            else:
                new = self._new_file_in(os.path.dirname(path), data)
                if durable:
                    self._barrier.sync()  # the bytes are on disk before their name can be
                try:
                    new.link(path)  # atomic, and never replaces an existing object
                except FileExistsError:
                    existing = _sha256_of_file(path)
            if durable:
                # Also when the key existed: another thread may have linked it and not flushed it yet.
                self._barrier.sync()
            if existing is None:
                return PutResult(PutOutcome.CREATED, sha256)
            return PutResult(PutOutcome.IDENTICAL if existing == sha256 else PutOutcome.CONFLICT, existing)
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            if new is not None:
                new.close()

    def put_hint(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            new = self._new_file_in(os.path.dirname(path), data)
            try:
                new.replace(path)
            finally:
                new.close()
        except OSError as exc:
            raise _storage_error(exc) from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise _storage_error(exc) from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            result = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(exc) from exc
        return ObjectInfo(key, result.st_size, datetime.fromtimestamp(result.st_mtime, timezone.utc))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _storage_error(exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            if not self.root.is_dir():
                raise StorageUnavailable("object store folder is missing")
            return
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _storage_error(exc) from exc
            for entry in entries:
                if entry.name.startswith(_TMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if folder != self.root or prefix or not entry.name.startswith("."):
                        stack.append(Path(entry.path))
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = Path(entry.path).relative_to(self.root).as_posix()
                yield ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, timezone.utc))

    def ping(self) -> None:
        if not self.root.is_dir():
            try:
                self._ensure_dir(self._root)
            except OSError as exc:
                raise _storage_error(exc) from exc
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable("object store folder is not writable")
