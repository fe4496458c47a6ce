"""Recycling with a fake clock, on SQLite and PostgreSQL: the oldest unprotected studies go until the node is under
90% of its limits; protected studies and studies still receiving stay; off unless storage_recycle and a limit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from shared.db.models import AuditEvent
from shared.events import utc_now
from shared.node_config import NodeConfig
from shared.recycling import recycle
from shared.runtime import Runtime
from tests.shared.test_retention import held, protect, store_study


def test_the_oldest_unprotected_studies_are_recycled_under_the_limit(runtime: Runtime) -> None:
    oldest, second, third, newest = (store_study(runtime, 1) for _ in range(4))
    protect(runtime, oldest)
    config = NodeConfig(storage_max_instances=3, storage_recycle=True)
    later = utc_now() + timedelta(hours=2)
    assert recycle(runtime.engine, runtime.sessions, runtime.store, config, utc_now()) == 0  # all still receiving
    assert recycle(runtime.engine, runtime.sessions, runtime.store, NodeConfig(storage_max_instances=3), later) == 0
    assert recycle(runtime.engine, runtime.sessions, runtime.store, NodeConfig(storage_recycle=True), later) == 0
    assert held(runtime)["instances"] == 4

    assert recycle(runtime.engine, runtime.sessions, runtime.store, config, later) == 2  # 4 -> 2 (<= 90% of 3)
    state = held(runtime)
    assert state["studies"] == {oldest, newest} and state["objects"] == 2 and state["claims"] == 2
    with runtime.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "recycled")).all()
    assert sorted(event.details["study_instance_uid"] for event in events) == sorted([second, third])
    assert recycle(runtime.engine, runtime.sessions, runtime.store, config, later) == 0  # under the target now
