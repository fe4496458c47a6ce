"""Fixtures: real PostgreSQL, Redis and a moto S3 server; nodes started as users start them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from shared.runtime import Runtime
from tests.archive import open_archive
from tests.faults import OwnRedis
from tests.node import Node, free_port, port_accepts, wait_until

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    name = f"pacs_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A database of the local Redis server, emptied before and after (one per pytest-xdist worker)."""
    db = 9 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    client = redis.Redis.from_url(f"{REDIS_URL}/{db}", socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is required: {exc}")
    yield f"{REDIS_URL}/{db}"
    client.flushdb()


def workers_consuming(redis_url: str) -> int:
    """Clients of this Redis database blocked in BRPOP: Celery workers (indexers, movers) consuming their queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        db = client.connection_pool.connection_kwargs["db"]
        return sum(1 for entry in client.client_list() if entry["cmd"] == "brpop" and int(entry["db"]) == db)
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class S3Server:
    """moto's standalone S3 server (a real HTTP endpoint) on a fixed port, so it can be stopped and started again.

    moto keeps its data in the test process across servers, so every start begins with a reset: each test
    (and each start after a stop) sees an empty store.
    """

    def __init__(self) -> None:
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_until(lambda: port_accepts(self.port), 10, "moto S3 server")
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10)  # moto's state outlives its server: start empty

    def stop(self) -> None:
        self._server.stop()

    def env(self, bucket: str = "pacs") -> dict[str, str]:
        return {"PACS_STORAGE_URL": f"s3://{bucket}", "PACS_S3_ENDPOINT": self.endpoint,
                "PACS_S3_ACCESS_KEY": "testing", "PACS_S3_SECRET_KEY": "testing"}


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """The composition root on a fresh archive, once on SQLite and once on PostgreSQL (modules that need one
    database only define their own ``runtime``)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    archive = open_archive(tmp_path / "data", url)
    yield archive
    archive.close()


@pytest.fixture
def embedded_node(tmp_path: Path) -> Iterator[Node]:
    """`pacs serve` on a fresh data directory (SQLite, local objects, embedded queue)."""
    node = Node(tmp_path)
    node.service("serve")
    with node.running():
        yield node


@pytest.fixture(scope="module")
def module_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """`pacs serve` on a fresh data directory, shared by the tests of one module (a start and a stop cost seconds).
    Its tests run one after the other (pytest-xdist's --dist loadfile keeps a module on one worker); each works on
    data of its own (new UIDs, its own patient IDs and modality names) and puts back any setting it changes."""
    node = Node(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    node.service("serve")
    with node.running():
        yield node
