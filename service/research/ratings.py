"""Longitudinal-record helpers behind the CLI: calibration inputs and stored reports."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from db.records import AppraisalStatus, Calibration, ResultKind
from db.repository import Repository
from db.timeutil import utc_now
from pipeline.errors import PipelineError
from pipeline.hashing import file_sha256
from service.config.settings import load_config
from service.research.calibration import RatingRow, fit_calibration

_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


@dataclass(frozen=True)
class ScoredRating:
    photo: str
    rating: float
    score: float
    model_identity: str


def _stored_score(repository: Repository, uid: str) -> tuple[float, str]:
    photo = repository.find_photo(uid)
    if photo is None:
        raise PipelineError(f"No photo with SOP Instance UID {uid} has been received.")
    done = [a for a in repository.appraisals_for_photo(photo.id)
            if a.status is AppraisalStatus.SUCCEEDED and a.primary_score is not None]
    if not done:
        raise PipelineError(f"The photo {uid} has no succeeded appraisal to calibrate with.")
    latest = max(done, key=lambda a: a.created_at)
    return latest.primary_score, latest.model_id_hash


def scores_for_rows(repository: Repository, rows: Sequence[RatingRow], base: Path, *, bundle: str | None,
                    demo: bool) -> list[ScoredRating]:
    """The primary score of every rated photo: looked up for SOP Instance UIDs,
    computed with the configured bundle for photo files. All must come from one model."""
    scored: list[ScoredRating] = []
    models = None
    for row in rows:
        if _UID.match(row.photo):
            score, identity = _stored_score(repository, row.photo)
        else:
            if models is None:
                models = _scorer(bundle, demo)
            score, identity = models(base / row.photo)
        scored.append(ScoredRating(row.photo, row.rating, score, identity))
    identities = {s.model_identity for s in scored}
    if len(identities) != 1:
        raise PipelineError(f"The rated photos were scored with {len(identities)} different models; "
                            "a calibration holds for one model only.")
    return scored


def _scorer(bundle: str | None, demo: bool):
    """Score photo files as every appraising command does: the configuration (with ``--bundle``/``--demo``
    on top), its appraisal settings and its bundle."""
    from pipeline.appraise import appraise
    from pipeline.preprocess.photo_io import load_photo
    from service.config.appraisal import settings_from
    from service.runtime.model_store import open_bundle

    config = load_config(os.environ, {"demo": True if demo else None, "bundle": bundle},
                         options={"demo": "--demo", "bundle": "--bundle"})
    settings = settings_from(config)
    models = open_bundle(config.models_dir, config.bundle, demo=config.demo, device=settings.device)

    def score(path: Path) -> tuple[float, str]:
        result = appraise(load_photo(path), models, settings)
        return result.primary_score, result.model.identity

    return score


def fit_and_save(repository: Repository, scored: Sequence[ScoredRating], source: Path) -> tuple[Calibration, int]:
    """Fit the calibration on the rated photos (all of one model) and store it; returns it and its id."""
    calibration = fit_calibration(
        [s.score for s in scored], [s.rating for s in scored], model_identity=scored[0].model_identity,
        source=Path(source).name, created_at=utc_now(),
        provenance={"source_sha256": file_sha256(source),
                    "rows": [{"photo": s.photo, "rating": s.rating, "score": s.score} for s in scored]},
    )
    return calibration, repository.save_calibration(calibration)


def stored_report_pdf(repository: Repository, appraisal_id: int) -> bytes:
    """The PDF report that was filed (and sent) for an appraisal."""
    pdfs = [r for r in repository.result_objects_for(appraisal_id) if r.kind is ResultKind.ENCAPSULATED_PDF]
    if not pdfs:
        raise PipelineError(f"Appraisal {appraisal_id} has no stored PDF report.")
    dataset = pydicom.dcmread(pdfs[-1].file_path)
    length = int(dataset.get("EncapsulatedDocumentLength", len(dataset.EncapsulatedDocument)))
    return bytes(dataset.EncapsulatedDocument[:length])
