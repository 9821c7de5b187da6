"""Alembic environment: runs against the engine the archive hands in."""

from __future__ import annotations

from alembic import context

from archive.models import Base
import worklist.models  # noqa: F401  (registers the worklist tables in Base.metadata)
import reports.models  # noqa: F401  (and the reports' tables)

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
