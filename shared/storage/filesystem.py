"""Object store in a local folder: write a temporary file, flush, link it into place, flush.

Durability comes only from the store's SyncBarrier (``syncfs``, one flush shared by every thread storing at that
moment; see shared.storage.sync_barrier), never from an fsync per file or folder. A durable ``put_new`` flushes
twice: after the temporary file is written, so a name never reaches the disk before its bytes (a crash cannot
leave a torn object under its key), and after the link, so the name is durable on return. Each flush also makes
durable every write the store made before it: the claim and the pending marker that ingest writes just before
the object without a flush of their own (``put_new(durable=False)``, ``put_hint``) are durable before the object's
name exists, and new folders are durable with their first object.
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


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return size_and_sha256(read_chunks(stream))[1]


class FilesystemObjectStore:
    """Objects are files below ``root``; a key is a relative path of validated components."""

    def __init__(self, root: Path, barrier: SyncBarrier | None = None) -> None:
        self.root = root
        self.description = root.as_uri()
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._barrier = barrier or SyncBarrier(root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` (and parents); they become durable with the next flush."""
        if directory in self._known_dirs:
            return
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            if probe == probe.parent:
                break
            probe = probe.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
        with self._dirs_lock:
            if len(self._known_dirs) > 100_000:
                self._known_dirs.clear()
            self._known_dirs.add(directory)

    def _write_temp(self, directory: Path, data: ObjectData) -> Path:
        temp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks_of(data):
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return temp

    def _write_temp_in(self, directory: Path, data: ObjectData) -> Path:
        try:
            self._ensure_dir(directory)
            return self._write_temp(directory, data)
        except FileNotFoundError:
            # The folder vanished since it was cached (e.g. a remount): create it again, once.
            with self._dirs_lock:
                self._known_dirs.discard(directory)
            self._ensure_dir(directory)
            return self._write_temp(directory, data)

    def put_new(self, key: str, data: ObjectData, sha256: str, durable: bool = True) -> PutResult:
        path = self._path(key)
        temp: Path | None = None
        try:
            existing: str | None = None
            if path.exists():  # a re-send: nothing to write
                existing = _sha256_of_file(path)
            else:
                temp = self._write_temp_in(path.parent, data)
                if durable:
                    self._barrier.sync()  # the bytes are on disk before their name can be
                try:
                    os.link(temp, path)  # atomic, and never replaces an existing object
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
            if temp is not None:
                try:
                    temp.unlink()
                except OSError:
                    pass

    def put_hint(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            temp = self._write_temp_in(path.parent, data)
            os.replace(temp, path)
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
                self._ensure_dir(self.root)
            except OSError as exc:
                raise _storage_error(exc) from exc
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable("object store folder is not writable")
