"""Alembic environment, driven by ``db.migrate`` (which hands over an open connection)."""

from __future__ import annotations

from alembic import context

from db.engine import create_engine_for
from db.models import Base


def _configure_and_run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = create_engine_for(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _configure_and_run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use db.migrate.upgrade")
run()
