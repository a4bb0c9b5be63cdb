"""Pure rules shared by every repository: retry backoff, input checks, orderings.

Job state machine:      QUEUED ─claim→ RUNNING ─complete→ SUCCEEDED
                                        RUNNING ─fail(retryable, attempts left)→ QUEUED (backoff)
                                        RUNNING ─fail(otherwise)→ FAILED
                                        RUNNING, lease expired ─claim→ RUNNING (new owner) or FAILED
Transfer state machine: the same with PENDING / SENDING / DONE / FAILED.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from db.errors import InvalidTransitionError, LeaseLostError
from db.records import FailureRecord, TimelineEntry

#: ``error_code`` given to work whose lease ran out once too often (the worker kept dying).
LEASE_EXPIRED_CODE = "lease_expired"
MAX_ERROR_MESSAGE_CHARS = 300
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try and how long to wait: delay = min(max, base * 2**(attempts-1)).

    ``jitter`` in [0, 1] shortens each delay by a random fraction up to ``jitter`` (drawn from
    the ``random.Random`` handed to :meth:`delay`), so that many failures do not retry in lockstep.
    """

    max_attempts: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not (math.isfinite(self.base_delay_s) and self.base_delay_s >= 0):
            raise ValueError(f"base_delay_s must be finite and >= 0, got {self.base_delay_s!r}")
        if not (math.isfinite(self.max_delay_s) and self.max_delay_s >= self.base_delay_s):
            raise ValueError(f"max_delay_s must be finite and >= base_delay_s, "
                             f"got {self.max_delay_s!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must lie in [0, 1], got {self.jitter!r}")

    def delay(self, attempts: int, rng: random.Random | None) -> timedelta:
        """Wait before the next attempt, after ``attempts`` (>= 1) attempts have failed."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        exponent = min(attempts - 1, 64)  # 2**64 * base exceeds any sane max already
        seconds = min(self.max_delay_s, self.base_delay_s * 2.0**exponent)
        if self.jitter > 0.0:
            if rng is None:
                raise ValueError("a RetryPolicy with jitter needs a random.Random")
            seconds *= 1.0 - self.jitter * rng.random()
        return timedelta(seconds=seconds)


DEFAULT_JOB_RETRY = RetryPolicy(max_attempts=3, base_delay_s=10.0, max_delay_s=600.0)
DEFAULT_TRANSFER_RETRY = RetryPolicy(max_attempts=10, base_delay_s=30.0, max_delay_s=3600.0)


def retry_at(attempts: int, max_attempts: int, retryable: bool, now: datetime,
             policy: RetryPolicy, rng: random.Random | None) -> datetime | None:
    """When to try again after a failed attempt, or None when the failure is final."""
    if not retryable or attempts >= max_attempts:
        return None
    return now + policy.delay(attempts, rng)


def check_worker_id(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not worker_id.strip() or len(worker_id) > 128:
        raise ValueError(f"worker_id must be a non-empty string of at most 128 characters, "
                         f"got {worker_id!r}")
    return worker_id


def lease_delta(lease_seconds: float) -> timedelta:
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)) \
            or not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}")
    return timedelta(seconds=lease_seconds)


def check_error_code(error_code: str) -> str:
    if not isinstance(error_code, str) or not _ERROR_CODE.match(error_code):
        raise ValueError(f"error_code must match {_ERROR_CODE.pattern}, got {error_code!r}")
    return error_code


def one_line_message(message: str) -> str:
    """The error message as stored: whitespace collapsed to one line, at most 300 characters."""
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, got {type(message).__name__}")
    text = " ".join(message.split())
    if not text:
        raise ValueError("message must not be empty")
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return text


def check_destination(destination: str) -> str:
    """A transfer's destination as stored: a non-empty single line of at most 200 characters.

    The repository stores the destination the service names; what it means (an
    ``AE@host:port`` address, parsed by :mod:`dicom.addresses`) is not the database's business.
    """
    if not isinstance(destination, str) or not destination.strip():
        raise ValueError(f"destination must be a non-empty string, got {destination!r}")
    if destination != destination.strip() or any(c in destination for c in "\r\n\t") or len(destination) > 200:
        raise ValueError(f"destination must be one line of at most 200 characters without edge spaces, "
                         f"got {destination!r}")
    return destination


def timeline_sort_key(entry: TimelineEntry) -> tuple:
    """Acquisition (else study) time, undated last; then arrival, appraisal time and id."""
    return (entry.at is None, entry.at or _EARLIEST, entry.photo.received_at,
            entry.appraisal.created_at, entry.appraisal.id)


def failure_sort_key(failure: FailureRecord) -> tuple:
    """Newest failure first (use with ``reverse=True``)."""
    return (failure.failed_at, failure.kind.value, failure.record_id)


LEASE_EXPIRED_MESSAGE = ("The lease expired on the last allowed attempt; the worker probably "
                         "stopped while processing it.")


def check_lease(kind: str, item_id: int, state: str, running_state: str,
                lease_owner: str | None, worker_id: str) -> None:
    """Raise unless the item is in its running state under ``worker_id``'s lease."""
    if state != running_state:
        raise InvalidTransitionError(f"{kind} {item_id} is {state}, not {running_state}")
    if lease_owner != worker_id:
        raise LeaseLostError(f"{kind} {item_id} is leased by another worker, not {worker_id!r}")
