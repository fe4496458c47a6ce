"""S3ObjectStore: the object-store contract against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import hashlib
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from minio import Minio

from shared.storage.base import InvalidKey, ObjectNotFound, PartedData, PutOutcome, StorageUnavailable, StreamedData
from shared.storage.s3 import S3ObjectStore
from tests.conftest import S3Server

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def bucket() -> str:
    return f"pacs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(s3_server: S3Server, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(bucket, s3_server.endpoint, "testing", "testing", "us-east-1", timeout_seconds=4.0)


@pytest.fixture
def raw(s3_server: S3Server) -> Iterator[Minio]:
    """A plain S3 client, to look at the bucket from outside the store."""
    yield Minio(s3_server.endpoint.removeprefix("http://"), access_key="testing", secret_key="testing",
                secure=False, region="us-east-1")


def empty_the_server(server: S3Server) -> None:
    """Make the S3 server forget every bucket (a store rebuilt empty)."""
    request = urllib.request.Request(server.endpoint + "/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def test_the_bucket_is_created_on_first_use(store: S3ObjectStore, raw: Minio, bucket: str) -> None:
    assert not raw.bucket_exists(bucket)
    assert store.put_new(KEY, b"first", sha(b"first")).outcome is PutOutcome.CREATED
    assert raw.bucket_exists(bucket)
    assert raw.get_object(bucket, KEY).read() == b"first"


def test_put_new_of_the_same_bytes_is_identical(store: S3ObjectStore) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    result = store.put_new(KEY, b"first", sha(b"first"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.IDENTICAL, sha(b"first"))


def test_put_new_of_other_bytes_is_a_conflict_and_keeps_the_first(store: S3ObjectStore) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    result = store.put_new(KEY, b"second", sha(b"second"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.CONFLICT, sha(b"first"))
    assert store.get(KEY) == b"first"


def test_the_sha256_is_kept_in_metadata(store: S3ObjectStore, raw: Minio, bucket: str) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    assert raw.stat_object(bucket, KEY).metadata["x-amz-meta-sha256"] == sha(b"first")


def test_identical_and_conflict_are_decided_from_metadata_without_download(store: S3ObjectStore) -> None:
    # The recorded hash deliberately differs from the bytes' own: only the metadata can give these answers.
    recorded = "f" * 64
    store.put_new(KEY, b"bytes", recorded)
    assert store.put_new(KEY, b"bytes", recorded).outcome is PutOutcome.IDENTICAL
    conflict = store.put_new(KEY, b"bytes", sha(b"bytes"))
    assert (conflict.outcome, conflict.stored_sha256) == (PutOutcome.CONFLICT, recorded)


def test_put_hint_replaces_the_object(store: S3ObjectStore) -> None:
    store.put_hint(".pending/1.2.3.json", b"one")
    store.put_hint(".pending/1.2.3.json", b"two")
    assert store.get(".pending/1.2.3.json") == b"two"


def test_a_staged_hint_is_written_at_once_and_a_dropped_one_removed(store: S3ObjectStore) -> None:
    kept = store.stage_hint(".pending/1.2.3.json", b"kept")
    assert store.get(".pending/1.2.3.json") == b"kept"  # an acknowledged PUT: durable and visible already
    kept.publish()
    assert store.get(".pending/1.2.3.json") == b"kept"
    store.stage_hint(".pending/1.2.4.json", b"dropped").drop()
    assert store.stat(".pending/1.2.4.json") is None


def test_get_open_and_stat_read_the_object(store: S3ObjectStore) -> None:
    store.put_new(KEY, b"content", sha(b"content"))
    assert store.get(KEY) == b"content"
    with store.open(KEY) as stream:
        assert stream.read() == b"content"
    info = store.stat(KEY)
    assert info is not None and (info.key, info.size) == (KEY, 7)
    assert info.modified.utcoffset() is not None


def test_a_missing_object_is_not_found(store: S3ObjectStore) -> None:
    store.put_new(KEY, b"x", sha(b"x"))
    assert store.stat("1.2/1.3/1.4.dcm") is None
    with pytest.raises(ObjectNotFound):
        store.get("1.2/1.3/1.4.dcm")


def test_delete_removes_and_deleting_a_missing_object_is_fine(store: S3ObjectStore) -> None:
    store.put_new(KEY, b"content", sha(b"content"))
    store.delete(KEY)
    store.delete(KEY)
    assert store.stat(KEY) is None


def test_list_is_recursive_under_the_prefix(store: S3ObjectStore) -> None:
    keys = {"1.2/1.3/1.4.dcm", "1.2/1.3/1.5.dcm", "1.2/1.6/1.7.dcm", "9.9/9.8/9.7.dcm"}
    for key in keys:
        store.put_new(key, key.encode(), sha(key.encode()))
    assert {info.key for info in store.list("1.2/")} == keys - {"9.9/9.8/9.7.dcm"}
    assert {info.key: info.size for info in store.list("9.9/")} == {"9.9/9.8/9.7.dcm": 15}
    assert (store.count("1.2/"), store.count("9.9/"), store.count("4.5/")) == (3, 1, 0)


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", ".hidden/x", ""])
def test_keys_outside_the_scheme_are_refused(store: S3ObjectStore, raw: Minio, bucket: str, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_new(key, b"x", sha(b"x"))
    with pytest.raises(InvalidKey):
        store.put_hint(key, b"x")
    assert not raw.bucket_exists(bucket)  # refused before any request


def test_a_stopped_server_makes_the_store_unavailable_within_10_seconds(
    store: S3ObjectStore, s3_server: S3Server
) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    s3_server.stop()
    try:
        for operation in (lambda: store.put_new("1.2/1.3/1.4.dcm", b"x", sha(b"x")),
                          lambda: store.put_hint(".pending/1.4.json", b"{}"),
                          lambda: store.get(KEY), lambda: store.stat(KEY), lambda: list(store.list("1.2/")),
                          store.ping):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                operation()
            assert time.monotonic() - started < 10
    finally:
        s3_server.start()


def test_writes_work_again_when_the_server_returns(store: S3ObjectStore, s3_server: S3Server) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    s3_server.stop()
    with pytest.raises(StorageUnavailable):
        store.put_new("1.2/1.3/1.4.dcm", b"x", sha(b"x"))
    s3_server.start()  # the fixture's server comes back empty (as a store rebuilt from nothing would)
    assert store.put_new("1.2/1.3/1.4.dcm", b"x", sha(b"x")).outcome is PutOutcome.CREATED
    assert store.put_new("1.2/1.3/1.4.dcm", b"x", sha(b"x")).outcome is PutOutcome.IDENTICAL


def test_a_store_rebuilt_empty_gets_its_bucket_back_on_the_next_write(
    store: S3ObjectStore, s3_server: S3Server, raw: Minio, bucket: str
) -> None:
    store.put_new(KEY, b"first", sha(b"first"))
    s3_server.stop()
    s3_server.start()
    empty_the_server(s3_server)  # the store returns without the bucket
    store.put_hint(".pending/1.4.json", b"{}")  # the very first write after the outage succeeds
    assert store.put_new("1.2/1.3/1.4.dcm", b"x", sha(b"x")).outcome is PutOutcome.CREATED
    assert raw.bucket_exists(bucket)


def test_streamed_data_larger_than_a_part_is_uploaded_in_parts(store: S3ObjectStore, raw: Minio,
                                                               bucket: str) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    count = 20  # more than one 16 MiB part
    streamed = StreamedData(len(chunk) * count, lambda: iter([chunk] * count))
    digest = hashlib.sha256(chunk * count).hexdigest()
    assert store.put_new(KEY, streamed, digest).outcome is PutOutcome.CREATED
    assert hashlib.sha256(raw.get_object(bucket, KEY).read()).hexdigest() == digest
    assert "-" in raw.stat_object(bucket, KEY).etag  # a multipart upload's ETag names its parts
    assert store.put_new(KEY, streamed, digest).outcome is PutOutcome.IDENTICAL


def test_a_writer_that_lands_first_wins_even_after_the_store_looked(
        s3_server: S3Server, bucket: str, raw: Minio, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store itself refuses the second writer (conditional PUT): no HEAD-then-PUT race.

    Another store's write lands in the last moment before this store's PUT goes out, after any look it may have
    taken at the key: the PUT must be refused by the server, not overwrite the first writer's object.
    """
    mine, theirs = (S3ObjectStore(bucket, s3_server.endpoint, "testing", "testing", "us-east-1", timeout_seconds=4.0)
                    for _ in range(2))
    mine.ping()
    send_put = mine._client._put_object

    def their_write_lands_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert theirs.put_new(KEY, b"theirs", sha(b"theirs")).outcome is PutOutcome.CREATED
        monkeypatch.setattr(mine._client, "_put_object", send_put)
        return send_put(*args, **kwargs)

    monkeypatch.setattr(mine._client, "_put_object", their_write_lands_first)
    result = mine.put_new(KEY, b"mine", sha(b"mine"))
    assert (result.outcome, result.stored_sha256) == (PutOutcome.CONFLICT, sha(b"theirs"))
    assert raw.get_object(bucket, KEY).read() == b"theirs"


def test_a_store_without_conditional_writes_decides_before_it_writes(store: S3ObjectStore) -> None:
    store.ping()
    store._conditional_writes = False  # as an S3 server that ignores If-None-Match
    assert store.put_new(KEY, b"first", sha(b"first")).outcome is PutOutcome.CREATED
    assert store.put_new(KEY, b"first", sha(b"first")).outcome is PutOutcome.IDENTICAL
    assert store.put_new(KEY, b"second", sha(b"second")).outcome is PutOutcome.CONFLICT
    assert store.get(KEY) == b"first"


def test_the_conditional_write_probe_leaves_nothing_behind(store: S3ObjectStore, raw: Minio, bucket: str) -> None:
    store.ping()
    assert store._conditional_writes is True  # moto honours If-None-Match
    assert [item.object_name for item in raw.list_objects(bucket, recursive=True)] == []


def test_an_s3_object_has_no_stamp_so_its_readers_hash_it(store: S3ObjectStore) -> None:
    assert store.put_new(KEY, b"first", sha(b"first")).stamp is None
    with store.open(KEY) as stream:
        assert store.stamp(stream) is None


def test_parted_data_is_stored_as_its_parts_joined(store: S3ObjectStore) -> None:
    parted = PartedData((b"file meta ", b"data set"))
    assert store.put_new(KEY, parted, sha(b"file meta data set")).outcome is PutOutcome.CREATED
    assert store.get(KEY) == b"file meta data set"
    assert store.put_new(KEY, parted, sha(b"file meta data set")).outcome is PutOutcome.IDENTICAL
