"""Alembic environment: the URL comes from the caller's Config; batch mode keeps SQLite compatible."""

from __future__ import annotations

from alembic import context

from shared.db.engine import create_index_engine
from shared.db.models import Base

config = context.config
engine = create_index_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
