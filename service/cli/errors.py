"""Errors of the command line that a user can act on."""

from __future__ import annotations


class UsageFailure(Exception):
    """A command was given inputs it cannot use (e.g. a malformed ratings file); one sentence."""
