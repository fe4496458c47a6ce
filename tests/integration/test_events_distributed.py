"""Events in the distributed form: `pacs scp`, two `pacs indexer`, `pacs mover` and `pacs api` on PostgreSQL and
Redis. The study is announced once and forwarded once although both indexers run the event threads."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
from pydicom.uid import CTImageStorage

from tests.event_peers import Receiver, StoreScp
from tests.faults import OwnRedis
from tests.integration.test_auto_forward import push, register
from tests.node import Node, wait_until


def test_two_indexers_announce_and_forward_a_stable_study_once(
    tmp_path: Path, postgres_url: str, own_redis: OwnRedis
) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": own_redis.url})
    assert node.run("migrate").returncode == 0
    receiver = Receiver()
    destination = StoreScp(tmp_path)
    try:
        for service, name in (("scp", "scp"), ("indexer", "indexer-1"), ("indexer", "indexer-2"),
                              ("mover", "mover"), ("api", "api")):
            node.service(service, name=name)
        node.wait_ready()
        register(node, "dest", destination.ae_title, destination.port)
        config = httpx.patch(f"{node.api}/api/config", json={"study_stable_seconds": 2}, timeout=10)
        assert config.status_code == 200, config.text
        assert httpx.put(f"{node.api}/api/webhooks/ris", json={"url": receiver.url, "events": ["study_stable"]},
                         timeout=10).status_code == 201
        assert httpx.put(f"{node.api}/api/routing/rules/all", json={"destination": "dest"},
                         timeout=10).status_code == 201
        uids = push(node, tmp_path, CTImageStorage, 4, "CT_ROOM3", "P-DIST-EVENTS")
        wait_until(lambda: destination.received() == set(uids), 120, "the forwarded study")
        wait_until(lambda: receiver.events("study_stable"), 60, "the study_stable POST")
        forwards = httpx.get(f"{node.api}/api/routing/forwards", timeout=10).json()
        wait_until(lambda: httpx.get(f"{node.api}/api/routing/forwards", params={"state": "done"},
                                     timeout=10).json()["total"] == 1, 60, "the forward done")
        assert forwards["total"] == 1
        with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
            emitted = connection.execute("SELECT count(*) FROM study_stability").fetchone()
            delivered = connection.execute("SELECT count(*), min(state) FROM webhook_deliveries").fetchone()
            jobs = connection.execute("SELECT count(*) FROM jobs WHERE kind = 'auto-forward'").fetchone()
        assert emitted == (1,) and delivered == (1, "delivered") and jobs == (1,)
        assert len(receiver.events("study_stable")) == 1
    finally:
        node.stop()
        destination.stop()
        receiver.stop()
        print(node.logs())
