"""The distributed form: `pacs scp`, two `pacs indexer`, `pacs api` as separate processes on PostgreSQL, Redis, S3."""

from __future__ import annotations

from pathlib import Path

import psycopg
from minio import Minio

from shared.storage.layout import patient_component
from tests.conftest import S3Server
from tests.factory import study_set
from tests.node import Node
from tests.peers import push_files


def test_a_study_pushed_to_separate_services_is_stored_in_s3_and_indexed_once_in_postgres(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server
) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url, **s3_server.env()})
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    node.service("scp")
    node.service("indexer")
    node.service("indexer", name="indexer-2")
    node.service("api")
    try:
        node.wait_ready()
        ready = node.get("/readyz")
        assert ready.status_code == 200, ready.text
        files = study_set(tmp_path / "study", 60)

        push_files(node.dicom_port, files)

        status = node.wait_indexed(60)
        assert status["queue"]["dead_letter"] == 0
        assert status["storage"]["url"].startswith("s3://pacs")
        assert {"scp", "indexer", "api"} <= set(status["services"])
        assert len(status["services"]["indexer"]) == 2

        s3 = Minio(s3_server.endpoint.removeprefix("http://"), "testing", "testing", secure=False)
        keys = [item.object_name for item in s3.list_objects("pacs", recursive=True)]
        assert sorted(key for key in keys if key.endswith(".dcm")) == sorted(  # the default layout, on S3
            f"{patient_component('PID-SET')}/{info['study_instance_uid']}/{info['series_instance_uid']}/{item.sop_instance_uid}.dcm"
            for item in files
            for info in [node.get(f"/api/instances/{item.sop_instance_uid}").json()]
        )
        assert len([key for key in keys if key.startswith(".claims/")]) == 60  # one claim per SOP Instance UID
        assert not [key for key in keys if key.startswith(".pending/")]

        with psycopg.connect(postgres_url.replace("+psycopg", "")) as connection:
            total, distinct = connection.execute(
                "SELECT count(*), count(DISTINCT sop_instance_uid) FROM instances").fetchone()
        assert (total, distinct) == (60, 60)
    finally:
        node.stop()
        print(node.logs())
