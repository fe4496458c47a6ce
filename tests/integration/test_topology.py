"""The deployment topology, run here as separate processes: PostgreSQL, Redis, a moto S3 server, `pacs migrate`,
two `pacs scp` replicas on different ports, two `pacs indexer` workers, `pacs mover` and `pacs api`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
from minio import Minio

from tests.conftest import S3Server, workers_consuming
from tests.factory import study_set
from tests.integration.test_move import StoreScp, movescu, register
from tests.node import Node, free_port, port_accepts, wait_until
from tests.peers import push_files


def test_two_scp_replicas_two_indexers_a_mover_and_an_api(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server
) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url, **s3_server.env()})
    assert node.run("migrate").returncode == 0
    second_port = free_port()
    node.service("scp", name="scp-a")
    node.service("scp", name="scp-b", extra_env={"PACS_DICOM_PORT": str(second_port)})
    indexer_a = node.service("indexer", name="indexer-a")
    node.service("indexer", name="indexer-b")
    node.service("mover")
    node.service("api")
    destination = StoreScp(tmp_path)
    try:
        node.wait_ready()
        wait_until(lambda: port_accepts(second_port), 30, "the second SCP replica")
        first, second = study_set(tmp_path / "a", 40, "P-A"), study_set(tmp_path / "b", 40, "P-B")
        push_files(node.dicom_port, first)
        push_files(second_port, second)
        push_files(second_port, first)  # the same instances through the other replica: nothing new
        node.wait_indexed(80)

        # Killing one indexer loses nothing: push more, kill it mid-queue, the other one finishes.
        third = study_set(tmp_path / "c", 60, "P-C")
        push_files(node.dicom_port, third)
        assert indexer_a.process is not None
        os.kill(indexer_a.process.pid, signal.SIGKILL)
        node.wait_indexed(140, timeout=90)
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as connection:
            total, distinct = connection.execute(
                "SELECT count(*), count(DISTINCT sop_instance_uid) FROM instances").fetchone()
        assert (total, distinct) == (140, 140)
        s3 = Minio(s3_server.endpoint.removeprefix("http://"), "testing", "testing", secure=False)
        objects = [o.object_name for o in s3.list_objects("pacs", recursive=True)]
        assert len([key for key in objects if key.endswith(".dcm")]) == 140
        assert not [key for key in objects if key.startswith(".pending/")]

        # A C-MOVE through one replica, carried out by the mover, with the object read from S3.
        register(node, "workstation", "WORKSTATION", 104, ["find", "move"])
        register(node, "destination", destination.ae_title, destination.port, ["store"])
        study_uid = node.get(f"/api/instances/{first[0].sop_instance_uid}").json()["study_instance_uid"]
        moved = movescu(node, destination.ae_title, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid})
        assert "Received Final Move Response (Success)" in moved.stdout + moved.stderr, moved.stdout
        expected = sum(1 for item in first if node.get(f"/api/instances/{item.sop_instance_uid}").json()
                       ["study_instance_uid"] == study_uid)
        assert len(destination.received()) == expected
    finally:
        destination.stop()
        node.stop()
        print(node.logs())


def test_each_service_stops_cleanly_on_sigterm(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url})
    assert node.run("migrate").returncode == 0
    services = [node.service(name) for name in ("scp", "indexer", "mover", "api")]
    try:
        node.wait_ready()
        wait_until(lambda: workers_consuming(redis_url) >= 2, 30, "the indexer and the mover consuming their queues")
        for service in services:
            assert service.process is not None
            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            assert service.process.wait(timeout=15) == 0, service.log()
            print(f"{service.command} stopped in {time.monotonic() - started:.2f} s")
    finally:
        node.stop()
