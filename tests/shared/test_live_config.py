"""LiveConfig: a new association sees every change of the configuration, and pays one small query when nothing
changed (the config generation that database triggers raise), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, text

from shared import live_config
from shared.db.migrate import alembic_config
from shared.live_config import LiveConfig
from shared.runtime import Runtime


@pytest.fixture
def live(runtime: Runtime) -> Iterator[LiveConfig]:
    config = LiveConfig.for_settings(runtime.settings, runtime.sessions)
    config.refresh_now()
    yield config
    config.stop()


def execute(runtime: Runtime, statement: str, **values: Any) -> None:
    """SQL as an admin or a script would run it, past the API."""
    with runtime.engine.begin() as connection:
        connection.execute(text(statement), values)


def add_modality(runtime: Runtime, name: str, ae_title: str) -> None:
    execute(runtime, "INSERT INTO modalities (name, ae_title, host, port, allow, description, facility, updated_at) "
                     "VALUES (:name, :ae_title, '10.0.0.7', 104, '[\"echo\", \"find\"]', '', '', :now)",
            name=name, ae_title=ae_title, now="2026-12-07 12:00:00")


def statements_of(runtime: Runtime) -> list[str]:
    """The SQL statements the engine runs from now on (appended as they run)."""
    seen: list[str] = []
    event.listen(runtime.engine, "before_cursor_execute",
                 lambda connection, cursor, statement, *rest: seen.append(statement))
    return seen


def test_changes_made_past_the_api_reach_the_next_association(runtime: Runtime, live: LiveConfig) -> None:
    add_modality(runtime, "ct-1", "CT1")
    snapshot, read_now = live.fresh()
    assert read_now and snapshot.is_registered("CT1")

    execute(runtime, "UPDATE modalities SET ae_title = 'CT2' WHERE name = 'ct-1'")
    assert live.fresh()[0].is_registered("CT2")

    execute(runtime, "INSERT INTO node_settings (key, value, updated_at) VALUES ('max_associations', '7', :now)",
            now="2026-12-07 12:00:00")
    assert live.fresh()[0].config.max_associations == 7

    execute(runtime, "DELETE FROM modalities")
    execute(runtime, "DELETE FROM node_settings")
    snapshot = live.fresh()[0]
    assert not snapshot.is_registered("CT2") and snapshot.config.max_associations != 7


def test_an_unchanged_configuration_costs_one_query_per_association(runtime: Runtime, live: LiveConfig) -> None:
    for number in range(20):
        add_modality(runtime, f"modality-{number}", f"AE{number}")
    live.fresh()
    statements = statements_of(runtime)
    for _ in range(5):
        assert live.fresh()[0].is_registered("AE19")
    assert len(statements) == 5 and all("config_generation" in statement for statement in statements)


def test_without_a_config_generation_everything_is_read_every_time(runtime: Runtime, live: LiveConfig) -> None:
    """A database not yet migrated to the counter (a service upgraded before `pacs migrate` ran) still works."""
    command.downgrade(alembic_config(runtime.settings.resolved_database_url), "0010")
    add_modality(runtime, "mr-1", "MR1")
    assert live.fresh()[0].is_registered("MR1")
    execute(runtime, "DELETE FROM modalities")
    assert not live.fresh()[0].is_registered("MR1")


def test_the_poll_reads_everything_now_and_then_even_when_the_counter_stands_still(
        runtime: Runtime, live: LiveConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database restored from a backup can hold another configuration at the same count."""
    with runtime.engine.connect() as connection:
        generation = connection.execute(text("SELECT generation FROM config_generation")).scalar()
    add_modality(runtime, "us-1", "US1")
    execute(runtime, "UPDATE config_generation SET generation = :generation", generation=generation)
    assert not live.fresh()[0].is_registered("US1")  # the counter says nothing changed

    monkeypatch.setattr(live_config, "FULL_READ_SECONDS", 0.2)
    live._interval = 0.05
    live.start()
    deadline = time.monotonic() + 10
    while not live.current().is_registered("US1"):
        assert time.monotonic() < deadline, "the poll never read the configuration again"
        time.sleep(0.05)
