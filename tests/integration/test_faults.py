"""Ingest survives its helpers: only the object store going away stops C-STORE, and nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg

from tests.conftest import S3Server, workers_consuming
from tests.factory import make_image, study_set
from tests.faults import OwnRedis, TcpProxy
from tests.node import Node, wait_until
from tests.peers import StoreClient, push_files

STORE_UNAVAILABLE = 0xA701


def distributed_node(tmp_path: Path, database_url: str, broker_url: str, extra: dict[str, str] | None = None) -> Node:
    node = Node(tmp_path, {"PACS_DATABASE_URL": database_url, "PACS_BROKER_URL": broker_url, **(extra or {})})
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    return node


def start_services(node: Node, *services: str) -> None:
    for service in services:
        node.service(service)
    node.wait_ready()


def instance_rows(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as connection:
        row = connection.execute("SELECT count(*), count(DISTINCT sop_instance_uid) FROM instances").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_local_object_folder_unavailable_answers_a7xx_quickly_and_ingest_resumes(embedded_node: Node) -> None:
    objects = embedded_node.data_dir / "objects"
    objects.rename(embedded_node.data_dir / "objects-unmounted")
    objects.write_text("the volume is gone")
    try:
        with StoreClient(embedded_node.dicom_port) as client:
            started = time.monotonic()
            status = client.store(make_image())
            assert time.monotonic() - started < 10
        assert status == STORE_UNAVAILABLE
        assert embedded_node.get("/readyz").json()["missing"] == ["object_store"]
        assert embedded_node.status()["counts"]["instances"] == 0
    finally:
        objects.unlink()
        (embedded_node.data_dir / "objects-unmounted").rename(objects)

    with StoreClient(embedded_node.dicom_port) as client:
        assert client.store(make_image()) == 0x0000
    embedded_node.wait_indexed(1)


def test_s3_unavailable_answers_a7xx_within_10_seconds_and_ingest_resumes(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server
) -> None:
    node = distributed_node(tmp_path, postgres_url, redis_url, s3_server.env())
    try:
        start_services(node, "scp", "indexer", "api")
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image()) == 0x0000
        node.wait_indexed(1)

        s3_server.stop()
        with StoreClient(node.dicom_port) as client:
            started = time.monotonic()
            status = client.store(make_image())
            elapsed = time.monotonic() - started
        assert status == STORE_UNAVAILABLE and elapsed < 10

        s3_server.start()  # the same endpoint again, empty: the bucket is created again
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image()) == 0x0000
        node.wait_indexed(2)
    finally:
        node.stop()
        print(node.logs())


def test_an_s3_store_that_stalls_answers_a701_before_the_scu_gives_up_and_nothing_is_acknowledged(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server
) -> None:
    proxy = TcpProxy(s3_server.port)
    proxy.start()
    env = {**s3_server.env(), "PACS_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"}
    node = distributed_node(tmp_path, postgres_url, redis_url, env)
    try:
        start_services(node, "scp", "indexer", "api")
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image()) == 0x0000
            proxy.stall()  # requests reach the proxy and stay there, as with an overloaded or hung endpoint
            stalled = make_image()
            assert client.store(stalled) == STORE_UNAVAILABLE  # an answer, within the client's 30 s DIMSE timeout
        proxy.resume()
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image()) == 0x0000
            assert client.store(stalled) == 0x0000  # the modality's retry succeeds (stored once, or now)
        node.wait_indexed(3, timeout=90)
    finally:
        proxy.resume()
        node.stop()
        proxy.cut()
        print(node.logs())


def test_redis_down_during_a_push_loses_nothing_and_everything_is_indexed_when_it_returns(
    tmp_path: Path, postgres_url: str, own_redis: OwnRedis
) -> None:
    node = distributed_node(tmp_path, postgres_url, own_redis.url)
    try:
        start_services(node, "scp", "indexer", "api")
        files = study_set(tmp_path / "study", 120)
        push_files(node.dicom_port, files[:40])

        own_redis.stop()  # and it comes back empty: whatever was queued is gone too
        push_files(node.dicom_port, files[40:])  # every C-STORE must still succeed
        time.sleep(1)
        own_redis.start()

        node.wait_indexed(120, timeout=90)
        assert instance_rows(postgres_url) == (120, 120)
    finally:
        node.stop()
        print(node.logs())


def test_postgres_down_during_a_push_loses_nothing_and_everything_is_indexed_when_it_returns(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    proxied_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    node = distributed_node(tmp_path, proxied_url, redis_url)
    try:
        start_services(node, "scp", "indexer", "api")
        files = study_set(tmp_path / "study", 120)
        push_files(node.dicom_port, files[:40])

        proxy.cut()
        push_files(node.dicom_port, files[40:])
        assert "database" in node.get("/readyz").json()["missing"]
        time.sleep(2)
        proxy.restore()

        node.wait_indexed(120, timeout=90)
        assert instance_rows(postgres_url) == (120, 120)
    finally:
        node.stop()
        proxy.cut()
        print(node.logs())


def test_an_indexer_killed_mid_queue_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    node = distributed_node(tmp_path, postgres_url, redis_url)
    try:
        start_services(node, "scp", "api")
        files = study_set(tmp_path / "study", 300)
        push_files(node.dicom_port, files)  # queued, nobody indexing yet
        assert node.status()["queue"]["pending"] == 300

        indexer = node.service("indexer")
        wait_until(lambda: node.status()["counts"]["instances"] > 0, 30, "indexing to start")
        assert indexer.process is not None
        os.kill(indexer.process.pid, signal.SIGKILL)
        indexer.process.wait()
        assert node.status()["counts"]["instances"] < 300, "the kill came too late to be mid-queue"

        node.service("indexer", name="indexer-restarted")
        node.wait_indexed(300, timeout=90)
        assert instance_rows(postgres_url) == (300, 300)
    finally:
        node.stop()
        print(node.logs())


def test_indexing_tasks_that_outlast_the_visibility_timeout_index_each_instance_once(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """The index is locked for three visibility timeouts: Redis hands the waiting tasks to the other indexer too;
    when the lock goes, both run them, and each instance is indexed once, nothing dead-lettered."""
    node = distributed_node(tmp_path, postgres_url, redis_url, {"PACS_BROKER_VISIBILITY_TIMEOUT_SECONDS": "2",
                                                                "PACS_SWEEP_GRACE_SECONDS": "120"})
    try:
        start_services(node, "scp", "api", "indexer")
        node.service("indexer", name="indexer2")
        wait_until(lambda: workers_consuming(redis_url) >= 2, 60, "both indexers consuming")
        files = study_set(tmp_path / "study", 60)
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as blocker:
            blocker.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")  # inserts wait, reads go on
            push_files(node.dicom_port, files)
            time.sleep(7)
            assert node.status()["counts"]["instances"] == 0
        node.wait_indexed(60, timeout=90)
        assert instance_rows(postgres_url) == (60, 60)
        assert node.status()["queue"]["dead_letter"] == 0
        logs = node.services["indexer"].log() + node.services["indexer2"].log()
        assert "index.redelivered" in logs, "no task was handed out twice: the fault did not happen"
    finally:
        node.stop()
        print(node.logs())
