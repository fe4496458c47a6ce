"""Faults under load, each ending with the ledger check (tests/ledger.py): no acknowledged instance is lost."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from tests.conftest import S3Server
from tests.destinations import StoreScp
from tests.factory import make_image
from tests.faults import OwnRedis, TcpProxy
from tests.ledger import SUCCESS, Ledger, Pusher, check_ledger
from tests.node import Node, port_accepts, wait_until

SERVICES = ("scp", "indexer", "mover", "api")
STORE_FULL, STORE_UNAVAILABLE = 0xA700, 0xA701


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[StoreScp]:
    receiver = StoreScp(tmp_path, ae_title="LEDGERDEST")
    yield receiver
    receiver.stop()


def study(count: int, patient_id: str) -> list[Dataset]:
    study_uid, series_uid = generate_uid(), generate_uid()
    return [make_image(CTImageStorage, study_uid, series_uid, patient_id=patient_id, instance_number=n + 1)
            for n in range(count)]


def separate_services(tmp_path: Path, env: dict[str, str] | None = None) -> Node:
    """Each service in its own process (so one can be killed), on the embedded URLs unless ``env`` says otherwise."""
    node = Node(tmp_path, env)
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    for service in SERVICES:
        node.service(service)
    node.wait_ready()
    return node


def push_in_parallel(node: Node, studies: list[list[Dataset]], ledger: Ledger) -> list[Pusher]:
    pushers = [Pusher(node.dicom_port, datasets, ledger, f"MODALITY{number}")
               for number, datasets in enumerate(studies)]
    for pusher in pushers:
        pusher.start()
    return pushers


def under_way(ledger: Ledger, acknowledged: int = 20) -> None:
    """Wait until the pushes are under way (some instances acknowledged), so that the fault comes under load."""
    wait_until(lambda: len(ledger.acknowledged()) >= acknowledged, 60, f"{acknowledged} instances acknowledged")


def finish(pushers: list[Pusher]) -> None:
    for pusher in pushers:
        pusher.join(timeout=240)
        assert not pusher.is_alive(), "a pusher did not finish"
        assert pusher.error is None, repr(pusher.error)


def test_sigkill_of_the_scp_at_random_moments_during_four_parallel_pushes(
        tmp_path: Path, destination: StoreScp) -> None:
    node = separate_services(tmp_path)
    rng = random.Random(20261126)
    ledger = Ledger()
    kills = 0
    try:
        pushers = push_in_parallel(node, [study(500, f"LEDGER-{n}") for n in range(4)], ledger)
        while any(pusher.is_alive() for pusher in pushers) and kills < 4:
            time.sleep(rng.uniform(0.5, 2.5))
            node.services["scp"].kill()  # SIGKILL: no grace, no flush
            kills += 1
            node.service("scp")
            wait_until(lambda: port_accepts(node.dicom_port), 30, "the restarted scp")
        finish(pushers)
        assert kills >= 2 and sum(pusher.reconnects for pusher in pushers) >= 1
        check_ledger(ledger, node, destination, tmp_path, report=lambda line: print(f"{line} kills={kills}"))
    finally:
        node.stop()
        print(node.logs()[-5000:])


def test_postgres_connections_killed_repeatedly_during_indexing(
        tmp_path: Path, destination: StoreScp, postgres_url: str, redis_url: str) -> None:
    node = separate_services(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url})
    database = postgres_url.rsplit("/", 1)[1]
    ledger = Ledger()
    stop_killing = threading.Event()
    killed = []

    def kill_connections() -> None:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            while not stop_killing.wait(0.4):
                rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall()
                killed.append(len(rows))

    killer = threading.Thread(target=kill_connections, daemon=True)
    try:
        pushers = push_in_parallel(node, [study(200, f"PGKILL-{n}") for n in range(2)], ledger)
        killer.start()
        finish(pushers)
        time.sleep(2)  # keep killing while the indexer catches up
        stop_killing.set()
        killer.join(timeout=10)
        assert sum(killed) > 0
        check_ledger(ledger, node, destination, tmp_path,
                     report=lambda line: print(f"{line} connections_killed={sum(killed)}"))
    finally:
        stop_killing.set()
        node.stop()
        print(node.logs()[-5000:])


def test_a_cold_restart_of_every_service_in_random_order_with_events_queued(
        tmp_path: Path, destination: StoreScp) -> None:
    node = Node(tmp_path)
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    node.service("scp")
    node.service("api")
    node.wait_ready()
    ledger = Ledger()
    try:
        finish(push_in_parallel(node, [study(150, "COLD-1"), study(150, "COLD-2")], ledger))
        assert node.status()["queue"]["pending"] == 300  # no indexer ran: every event is still queued
        node.stop()
        order = list(SERVICES)
        random.Random(7).shuffle(order)
        for service in order:
            node.service(service)
            time.sleep(0.3)
        node.wait_ready()
        check_ledger(ledger, node, destination, tmp_path, report=lambda line: print(f"{line} order={order}"))
    finally:
        node.stop()
        print(node.logs()[-5000:])


OUTAGE_SECONDS = 30


def test_redis_stopped_for_30_seconds_under_load_and_back_empty(
        tmp_path: Path, destination: StoreScp, postgres_url: str, own_redis: OwnRedis) -> None:
    node = separate_services(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": own_redis.url})
    ledger = Ledger()
    try:
        pushers = push_in_parallel(node, [study(300, "REDIS-1"), study(300, "REDIS-2")], ledger)
        under_way(ledger)
        own_redis.stop()  # whatever it held is gone: it comes back empty
        stopped = time.monotonic()
        finish(pushers)  # every C-STORE is still answered while the queue is down
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        own_redis.start()
        assert len(ledger.acknowledged()) == 600
        check_ledger(ledger, node, destination, tmp_path,
                     report=lambda line: print(f"{line} redis_down_seconds={OUTAGE_SECONDS}"))
    finally:
        node.stop()
        print(node.logs()[-5000:])


def test_postgres_stopped_for_30_seconds_under_load(
        tmp_path: Path, destination: StoreScp, postgres_url: str, redis_url: str) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    proxied_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    node = separate_services(tmp_path, {"PACS_DATABASE_URL": proxied_url, "PACS_BROKER_URL": redis_url})
    ledger = Ledger()
    try:
        pushers = push_in_parallel(node, [study(300, "PGDOWN-1"), study(300, "PGDOWN-2")], ledger)
        under_way(ledger)
        proxy.cut()  # every connection dropped, new ones refused: the database is gone
        stopped = time.monotonic()
        finish(pushers)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        proxy.restore()
        assert len(ledger.acknowledged()) == 600
        check_ledger(ledger, node, destination, tmp_path,
                     report=lambda line: print(f"{line} postgres_down_seconds={OUTAGE_SECONDS}"))
    finally:
        node.stop()
        proxy.cut()
        print(node.logs()[-5000:])


def test_object_store_stalled_then_unreachable_under_load(
        tmp_path: Path, destination: StoreScp, postgres_url: str, redis_url: str, s3_server: S3Server) -> None:
    """S3 first hangs (requests accepted, never answered) for longer than the SCP's store timeout, then refuses
    connections: every C-STORE meanwhile is answered 0xA7xx before the SCU's 30 s DIMSE timeout, nothing is
    acknowledged that is not stored, and the modalities' retries complete once S3 is back."""
    proxy = TcpProxy(s3_server.port)
    proxy.start()
    env = {**s3_server.env(), "PACS_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
           "PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url}
    node = separate_services(tmp_path, env)
    ledger = Ledger()
    try:
        pushers = push_in_parallel(node, [study(150, "S3DOWN-1"), study(150, "S3DOWN-2")], ledger)
        under_way(ledger)
        proxy.stall()
        time.sleep(12)  # beyond the SCP's 10 s limit per store
        proxy.cut()
        time.sleep(5)
        proxy.resume()
        proxy.restore()
        finish(pushers)
        statuses = {entry.status for entry in ledger.entries.values()}
        assert statuses <= {SUCCESS, STORE_FULL, STORE_UNAVAILABLE}  # always an answer, never a lost association
        refused = [entry for entry in ledger.entries.values() if entry.attempts > 1 or entry.status != SUCCESS]
        assert refused, "no C-STORE was refused: the fault did not happen"
        check_ledger(ledger, node, destination, tmp_path,
                     report=lambda line: print(f"{line} refused_instances={len(refused)}"))
    finally:
        proxy.resume()
        node.stop()
        proxy.cut()
        print(node.logs()[-5000:])
