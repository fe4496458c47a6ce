"""The index engine's SQLite connection settings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from shared.db.engine import create_index_engine

SQLITE_TEMP_STORE_MEMORY = 2


def test_sqlite_connections_use_wal_and_keep_temporary_tables_in_memory(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA temp_store")).scalar() == SQLITE_TEMP_STORE_MEMORY
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
