"""Object store in an S3 bucket (MinIO, AWS, moto) through the ``minio`` SDK.

A PUT is durable once S3 acknowledges it. Every request is bounded by short timeouts so that a store
that hangs is reported well within a DICOM caller's timeout.

``put_new`` never overwrites. Where the store honours conditional writes (``If-None-Match: *``: AWS S3 and MinIO
since 2024, moto), the store itself refuses a second writer of a key, in one request; elsewhere a HEAD decides
before the PUT (two writers racing on one key could then both write). Which applies is learned once, with a
probe object written twice.
"""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from collections.abc import Iterator
from datetime import timezone
from typing import BinaryIO
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from shared.storage.base import (
    ObjectData,
    ObjectInfo,
    ObjectNotFound,
    PartedData,
    PutDone,
    PutOutcome,
    PutResult,
    StorageError,
    StorageFull,
    StorageUnavailable,
    chunks_of,
    size_of,
    validate_key,
)

_SHA256_META = "sha256"
_PART_BYTES = 16 << 20
_PROBE_PREFIX = ".conditional-write-probe/"
_ALREADY_WRITTEN_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_FULL_CODES = {"XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "EntityTooLarge"}
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, MinioException)


def _translate(exc: BaseException) -> StorageError:
    if isinstance(exc, S3Error):
        if exc.code == "NoSuchBucket":
            return StorageUnavailable("object store bucket is missing")
        if exc.code in _FULL_CODES:
            return StorageFull(f"object store full ({exc.code})")
        if exc.code in _MISSING_CODES:
            return ObjectNotFound(exc.code)
        return StorageUnavailable(f"object store refused the request ({exc.code})")
    return StorageUnavailable(f"object store unreachable ({exc.__class__.__name__})")


class _ChunkReader(io.RawIOBase):
    """A readable stream over chunks (what the minio SDK reads an upload from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

class _ClosingStream(io.RawIOBase):
    """A readable stream over a urllib3 response that releases the connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class _PutHint:
    """A hint already written (S3ObjectStore.stage_hint)."""

    def __init__(self, store: "S3ObjectStore", key: str) -> None:
        self._store, self._key = store, key

    def publish(self) -> None:
        """It is under its key already."""

    def drop(self) -> None:
        try:
            self._store.delete_hint(self._key)
        except StorageError:
            pass  # the sweeper removes markers whose object never appeared


class S3ObjectStore:
    def __init__(
        self,
        bucket: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str,
        timeout_seconds: float,
    ) -> None:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.bucket = bucket
        self.description = f"s3://{bucket} at {parsed.scheme}://{parsed.netloc}"
        http = urllib3.PoolManager(
            num_pools=4,
            maxsize=32,
            timeout=urllib3.Timeout(connect=min(1.5, timeout_seconds), read=timeout_seconds),
            retries=urllib3.Retry(total=1, connect=1, read=0, backoff_factor=0.1),
        )
        self._client = Minio(
            parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parsed.scheme == "https",
            region=region,
            http_client=http,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()
        self._conditional_writes: bool | None = None  # learned by _learn_conditional_writes

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                if not self._client.bucket_exists(self.bucket):
                    self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise _translate(exc) from exc
            except _NETWORK_ERRORS as exc:
                raise _translate(exc) from exc
            self._bucket_ready = True
            if self._conditional_writes is None:
                self._conditional_writes = self._learn_conditional_writes()

    def _learn_conditional_writes(self) -> bool:
        """Whether the store refuses a PUT with ``If-None-Match: *`` to a key that exists (a probe, removed)."""
        probe = f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            self._client._put_object(self.bucket, probe, b"1", headers={"If-None-Match": "*"})
            try:
                self._client._put_object(self.bucket, probe, b"2", headers={"If-None-Match": "*"})
                return False
            except S3Error as exc:
                return exc.code in _ALREADY_WRITTEN_CODES
            finally:
                self._client.remove_object(self.bucket, probe)
        except (S3Error, *_NETWORK_ERRORS):
            return False  # HEAD before PUT always works

    def _forget_bucket_if_missing(self, exc: BaseException) -> None:
        """A bucket that vanished (a store rebuilt empty) is created again on the next request."""
        if isinstance(exc, S3Error) and exc.code == "NoSuchBucket":
            self._bucket_ready = False

    def _stored_sha256(self, key: str) -> str | None:
        try:
            stat = self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            raise
        recorded = (stat.metadata or {}).get(f"x-amz-meta-{_SHA256_META}")
        if recorded:
            return str(recorded)
        return hashlib.sha256(self.get(key)).hexdigest()

    def put_new(self, key: str, data: ObjectData, sha256: str, durable: bool = True) -> PutResult:
        """An acknowledged PUT is durable: ``durable`` changes nothing here."""
        validate_key(key)
        if isinstance(data, PartedData):
            data = data.joined()  # one body for the conditional PUT; S3's round trip dwarfs the copy
        return self._with_bucket(lambda: self._put_new(key, data, sha256))

    def stage_new(self, key: str, data: ObjectData, sha256: str) -> PutDone:
        """An acknowledged PUT is named already."""
        return PutDone(self.put_new(key, data, sha256))

    def put_claim(self, key: str, content: bytes) -> PutResult:
        return self.put_new(key, content, hashlib.sha256(content).hexdigest(), durable=False)

    def _with_bucket(self, write):  # type: ignore[no-untyped-def]
        """Run a write; if the bucket vanished (a store rebuilt empty), create it again and retry once."""
        self._ensure_bucket()
        try:
            return write()
        except StorageUnavailable:
            if self._bucket_ready:
                raise
            self._ensure_bucket()
            return write()

    def _put_new(self, key: str, data: ObjectData, sha256: str) -> PutResult:
        if self._conditional_writes and isinstance(data, bytes) and len(data) <= _PART_BYTES:
            return self._put_new_conditionally(key, data, sha256)
        try:
            existing = self._stored_sha256(key)
            if existing is not None:
                outcome = PutOutcome.IDENTICAL if existing == sha256 else PutOutcome.CONFLICT
                return PutResult(outcome, existing)
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data) if isinstance(data, bytes) else _ChunkReader(chunks_of(data)),
                size_of(data),
                content_type="application/dicom",
                metadata={_SHA256_META: sha256},
                part_size=_PART_BYTES,  # a large object goes up in parts of this size (memory stays flat)
            )
        except _NETWORK_ERRORS as exc:
            self._forget_bucket_if_missing(exc)
            raise _translate(exc) from exc
        return PutResult(PutOutcome.CREATED, sha256)

    def _put_new_conditionally(self, key: str, data: bytes, sha256: str) -> PutResult:
        headers = {"If-None-Match": "*", "Content-Type": "application/dicom", f"x-amz-meta-{_SHA256_META}": sha256}
        try:
            try:
                self._client._put_object(self.bucket, key, data, headers=headers)
                return PutResult(PutOutcome.CREATED, sha256)
            except S3Error as exc:
                if exc.code not in _ALREADY_WRITTEN_CODES:
                    raise
            existing = self._stored_sha256(key)
        except _NETWORK_ERRORS as exc:
            self._forget_bucket_if_missing(exc)
            raise _translate(exc) from exc
        if existing is None:  # written and removed again in between (a deletion): the next send writes it
            raise StorageUnavailable("the object changed while it was written; send it again")
        return PutResult(PutOutcome.IDENTICAL if existing == sha256 else PutOutcome.CONFLICT, existing)

    def put_hint(self, key: str, data: bytes) -> None:
        validate_key(key)
        self._with_bucket(lambda: self._put_hint(key, data))

    def stage_hint(self, key: str, data: bytes) -> _PutHint:
        """Written now: a PUT is durable once acknowledged, and visible at once."""
        self.put_hint(key, data)
        return _PutHint(self, key)

    def _put_hint(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data),
                                    content_type="application/json")
        except _NETWORK_ERRORS as exc:
            self._forget_bucket_if_missing(exc)
            raise _translate(exc) from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        try:
            response = self._client.get_object(self.bucket, key)
        except _NETWORK_ERRORS as exc:
            raise _translate(exc) from exc
        return io.BufferedReader(_ClosingStream(response), buffer_size=1 << 20)  # type: ignore[return-value]

    def stamp(self, stream: BinaryIO) -> str | None:
        """None: an ETag is a digest of the content (or of its parts), not of one object, and version ids exist only
        in versioned buckets; a reader of S3 hashes what it reads."""
        return None

    def stat(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            stat = self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            raise _translate(exc) from exc
        except _NETWORK_ERRORS as exc:
            raise _translate(exc) from exc
        modified = stat.last_modified
        assert modified is not None
        return ObjectInfo(key, int(stat.size or 0), modified.astimezone(timezone.utc))

    def delete_hint(self, key: str) -> None:
        self.delete(key)

    def replace_claim(self, key: str, content: bytes) -> None:
        self.put_hint(key, content)

    def delete_claim(self, key: str) -> None:
        self.delete(key)

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self._client.remove_object(self.bucket, key)
        except S3Error as exc:
            if exc.code not in _MISSING_CODES:
                raise _translate(exc) from exc
        except _NETWORK_ERRORS as exc:
            raise _translate(exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._ensure_bucket()
        try:
            for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if item.is_dir or item.object_name is None or item.last_modified is None:
                    continue
                yield ObjectInfo(item.object_name, int(item.size or 0), item.last_modified.astimezone(timezone.utc))
        except _NETWORK_ERRORS as exc:
            raise _translate(exc) from exc

    def count(self, prefix: str) -> int:
        return sum(1 for _ in self.list(prefix))  # a listing is what S3 has to count with

    def ping(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()

    def recover(self) -> None:
        """Nothing to bring back: a PUT acknowledged by S3 is durable."""

    def settle(self) -> None:
        """Nothing to wait for: no write is ever brought back after the fact."""

    def close(self) -> None:
        """No state of its own to settle."""
