"""Timezone-aware UTC datetimes at every repository boundary."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime (the default clock)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime, name: str) -> datetime:
    """Return ``value`` converted to UTC; raise for naive datetimes (their zone is unknowable).

    ``name`` names the offending argument in the error message.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def as_utc_or_none(value: datetime | None, name: str) -> datetime | None:
    """Like :func:`as_utc` but lets ``None`` through."""
    return None if value is None else as_utc(value, name)
