"""Claiming leased work (jobs, transfers) in SQL without ever handing one item to two workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db import rules

_NO_SYNC = {"synchronize_session": False}


@dataclass(frozen=True)
class WorkSpec:
    """Which table and which state names make up one leased-work state machine."""

    model: Any  # m.JobRow or m.TransferRow
    kind: str
    queued: str
    running: str
    done: str
    failed: str
    convert: Callable[[Any], Any]
    #: Lease the item once more after its last attempt's lease expired (its worker died), so
    #: that a worker can record the failure and answer it (jobs: a failure report); only if
    #: that pass's lease expires too is it failed here. Transfers need no such pass.
    report_pass: bool = False


def claim_next(s: Session, spec: WorkSpec, worker_id: str, lease: timedelta, now: datetime, *,
               postgres: bool) -> Any:
    """Fail expired work with no attempts left, then lease the oldest due item (or None).

    With ``spec.report_pass`` an item whose last attempt's lease expired is leased once more
    (its ``attempts`` then exceeds ``max_attempts``: the claimer must only record the failure).

    PostgreSQL locks the candidate with FOR UPDATE SKIP LOCKED, so concurrent claimers pass over
    it; SQLite runs this in a BEGIN IMMEDIATE transaction. The UPDATE is a compare-and-set on
    the attempt count and the "still due" condition either way.
    """
    model = spec.model
    expired = sa.and_(model.state == spec.running, model.lease_expires_at <= now)
    allowed = model.max_attempts + (1 if spec.report_pass else 0)
    dead = sa.select(model.id).where(expired, model.attempts >= allowed)
    if postgres:
        dead = dead.with_for_update(skip_locked=True)
    dead_ids = s.scalars(dead).all()
    if dead_ids:
        s.execute(sa.update(model).where(model.id.in_(dead_ids)).values(
            state=spec.failed, lease_owner=None, lease_expires_at=None,
            error_code=rules.LEASE_EXPIRED_CODE, last_error=rules.LEASE_EXPIRED_MESSAGE,
            finished_at=now, updated_at=now), execution_options=_NO_SYNC)
    due = sa.or_(sa.and_(model.state == spec.queued, model.next_attempt_at <= now),
                 sa.and_(expired, model.attempts < allowed))
    for _ in range(5):  # loops only if a compare-and-set loses, which the locks should prevent
        pick = sa.select(model.id, model.attempts).where(due).order_by(
            model.created_at, model.id).limit(1)
        if postgres:
            pick = pick.with_for_update(skip_locked=True)
        candidate = s.execute(pick).first()
        if candidate is None:
            return None
        claimed = s.execute(
            sa.update(model)
            .where(model.id == candidate.id, model.attempts == candidate.attempts, due)
            .values(state=spec.running, lease_owner=worker_id, lease_expires_at=now + lease,
                    attempts=model.attempts + 1, updated_at=now),
            execution_options=_NO_SYNC)
        if claimed.rowcount == 1:
            return spec.convert(s.get(model, candidate.id, populate_existing=True))
    return None
