"""Typed errors raised by repositories (both the SQL one and the in-memory fake)."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base class for every error a repository raises on purpose."""


class NotFoundError(RepositoryError):
    """A record looked up by its surrogate id does not exist."""


class ConflictError(RepositoryError):
    """The request contradicts what is stored (e.g. a study filed under another patient)."""


class InvalidTransitionError(RepositoryError):
    """A job or transfer was asked to move to a state its state machine does not allow from here."""


class LeaseLostError(InvalidTransitionError):
    """The caller does not hold the lease on a job or transfer (it expired and was reclaimed)."""
