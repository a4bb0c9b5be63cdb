"""Read-only reporting queries of SqlRepository, one function per Repository query method."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db import models as m
from db import rules
from db.records import (
    AppraisalStatus,
    FailureKind,
    FailureRecord,
    JobState,
    PatientSummary,
    QueueCounts,
    TimelineEntry,
    TransferState,
)


def queue_counts(s: Session) -> QueueCounts:
    jobs = {state: 0 for state in JobState}
    transfers = {state: 0 for state in TransferState}
    for counts, model in ((jobs, m.JobRow), (transfers, m.TransferRow)):
        for state, count in s.execute(sa.select(model.state, sa.func.count())
                                      .group_by(model.state)):
            counts[state] = count
    return QueueCounts(jobs=jobs, transfers=transfers)


def recent_failures(s: Session, limit: int) -> list[FailureRecord]:
    failures: list[FailureRecord] = []
    for model, kind, failed in ((m.JobRow, FailureKind.JOB, JobState.FAILED),
                                (m.TransferRow, FailureKind.TRANSFER, TransferState.FAILED)):
        rows = s.scalars(sa.select(model).where(model.state == failed).order_by(
            model.finished_at.desc(), model.id.desc()).limit(limit))
        failures += [FailureRecord(kind, row.id, row.error_code or "", row.last_error or "",
                                   row.attempts, row.finished_at, getattr(row, "destination", ""))
                     for row in rows]
    return sorted(failures, key=rules.failure_sort_key, reverse=True)[:limit]


def timeline(s: Session, patient_id: str, issuer_of_patient_id: str) -> list[TimelineEntry]:
    rows = s.execute(
        sa.select(m.AppraisalRow, m.PhotoRow, m.StudyRow)
        .join(m.PhotoRow, m.AppraisalRow.photo_id == m.PhotoRow.id)
        .join(m.StudyRow, m.PhotoRow.study_id == m.StudyRow.id)
        .join(m.PatientRow, m.StudyRow.patient_pk == m.PatientRow.id)
        .where(m.PatientRow.patient_id == patient_id,
               m.PatientRow.issuer_of_patient_id == issuer_of_patient_id,
               m.AppraisalRow.status == AppraisalStatus.SUCCEEDED)).all()
    entries = []
    for appraisal, photo, study in rows:
        photo_rec, study_rec = m.photo_record(photo), m.study_record(study)
        at = photo_rec.acquisition_datetime or study_rec.study_datetime
        entries.append(TimelineEntry(at, m.appraisal_record(appraisal), photo_rec, study_rec))
    return sorted(entries, key=rules.timeline_sort_key)


def patient_summaries(s: Session) -> list[PatientSummary]:
    study, photo, appraisal = m.StudyRow, m.PhotoRow, m.AppraisalRow
    studies = dict(s.execute(sa.select(study.patient_pk, sa.func.count())
                             .group_by(study.patient_pk)).all())
    photos = {pk: (count, last) for pk, count, last in s.execute(
        sa.select(study.patient_pk, sa.func.count(photo.id), sa.func.max(photo.received_at))
        .join(photo, photo.study_id == study.id).group_by(study.patient_pk))}
    appraisals = dict(s.execute(
        sa.select(study.patient_pk, sa.func.count(appraisal.id))
        .join(photo, photo.study_id == study.id)
        .join(appraisal, appraisal.photo_id == photo.id)
        .where(appraisal.status == AppraisalStatus.SUCCEEDED)
        .group_by(study.patient_pk)).all())
    summaries = []
    for row in s.scalars(sa.select(m.PatientRow)):
        photo_count, last_received = photos.get(row.id, (0, None))
        summaries.append(PatientSummary(m.patient_record(row), studies.get(row.id, 0),
                                        photo_count, appraisals.get(row.id, 0), last_received))
    # Sorted here, not in SQL: database collations differ from Python's code-point order.
    return sorted(summaries, key=lambda x: (x.patient.patient_id,
                                            x.patient.issuer_of_patient_id))
