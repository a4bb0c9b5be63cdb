"""Persistence: records, the Repository interface, SQL and in-memory implementations, migrations."""
