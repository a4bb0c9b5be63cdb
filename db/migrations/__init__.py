"""Alembic migration scripts of the cleftscore database; run them with ``db.migrate.upgrade``."""
