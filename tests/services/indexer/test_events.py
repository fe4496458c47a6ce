"""The event threads' housekeeping: finished webhook deliveries and forwards are deleted after 30 days, pending
ones never (fake clock, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.indexer.events import prune_logs
from shared.db.engine import create_index_engine, create_session_factory
from shared.db.migrate import upgrade_to_head
from shared.db.routing_models import Forward, RoutingRule, Webhook, WebhookDelivery

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = (f"sqlite:///{tmp_path / 'index.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    upgrade_to_head(url)
    engine = create_index_engine(url)
    yield create_session_factory(engine)
    engine.dispose()


def test_finished_rows_older_than_30_days_are_pruned_and_pending_ones_kept(sessions: sessionmaker[Session]) -> None:
    old, recent = NOW - timedelta(days=31), NOW - timedelta(days=1)
    with sessions.begin() as session:
        session.add(Webhook(id="w" * 32, name="w", url="http://127.0.0.1:9/", events=["study_stable"], enabled=True,
                            include_patient=False, created_at=old, updated_at=old))
        session.add(RoutingRule(id="r" * 32, name="r", enabled=True, trigger="study_stable", destination="d",
                                conditions={}, created_at=old, updated_at=old))
        session.flush()
        for event_id, state, created in (("a", "delivered", old), ("b", "failed", old), ("c", "pending", old),
                                         ("d", "delivered", recent)):
            session.add(WebhookDelivery(webhook_id="w" * 32, event_id=event_id, event="study_stable", payload={},
                                        state=state, attempts=1, next_attempt_at=created, last_error="",
                                        created_at=created))
        for uid, state, updated in (("1.1", "done", old), ("1.2", "failed", old), ("1.3", "pending", old),
                                    ("1.4", "done", recent)):
            session.add(Forward(rule_id="r" * 32, study_instance_uid=uid, state=state, attempts=1,
                                next_attempt_at=updated, last_error="", created_at=updated, updated_at=updated))
    prune_logs(sessions, NOW)
    with sessions() as session:
        assert sorted(session.scalars(select(WebhookDelivery.event_id))) == ["c", "d"]
        assert sorted(session.scalars(select(Forward.study_instance_uid))) == ["1.3", "1.4"]
