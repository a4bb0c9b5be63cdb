"""Schema migrations run from code: ``upgrade(url)`` brings a database to the newest revision.

The Alembic scripts ship inside the package (``db/migrations``); no alembic.ini is needed.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.engine import create_engine_for

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An in-memory Alembic config pointing at the packaged scripts (and a connection)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the packaged scripts define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


def _with_connection(target: str | sa.URL | sa.Engine, action) -> object:
    engine = target if isinstance(target, sa.Engine) else create_engine_for(target)
    try:
        with engine.begin() as connection:
            return action(connection)
    finally:
        if engine is not target:
            engine.dispose()


def upgrade(target: str | sa.URL | sa.Engine, revision: str = "head") -> None:
    """Migrate the database at ``target`` (URL or engine) up to ``revision``."""
    _with_connection(target, lambda conn: command.upgrade(alembic_config(conn), revision))


def current_revision(target: str | sa.URL | sa.Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return _with_connection(
        target, lambda conn: MigrationContext.configure(conn).get_current_revision())


def is_up_to_date(target: str | sa.URL | sa.Engine) -> bool:
    return current_revision(target) == head_revision()
