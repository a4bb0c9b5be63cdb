"""``cleftscore patients``, ``timeline``, ``calibrate`` and ``report``: the longitudinal record."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
from pathlib import Path
from typing import Annotated

import typer

_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def register(app: typer.Typer) -> None:
    app.command("patients")(patients_command)
    app.command("timeline")(timeline_command)
    app.command("calibrate")(calibrate_command)
    app.command("report")(report_command)


def _repository():
    from service.config.settings import load_config
    from service.runtime.database import open_repository

    return open_repository(load_config(os.environ), migrate=False)


def patients_command(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List patients with their number of appraisals."""
    repository = _repository()
    try:
        patients = repository.patients()
    finally:
        repository.close()
    rows = [{"patient_id": p.patient.patient_id, "issuer": p.patient.issuer_of_patient_id,
             "photos": p.photo_count, "appraisals": p.succeeded_appraisal_count,
             "last_seen": p.last_received_at.isoformat() if p.last_received_at else None} for p in patients]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No patients yet.")
    for row in rows:
        issuer = f" ({row['issuer']})" if row["issuer"] else ""
        typer.echo(f"{row['patient_id']}{issuer}\t{row['appraisals']} appraisal(s)\t{row['photos']} photo(s)\tlast {row['last_seen']}")


def timeline_rows(repository, patient_id: str, issuer: str) -> list[dict]:
    """Every succeeded appraisal of a patient in acquisition order, with changes since
    the first (baseline) and the previous visit scored with the same model, each judged
    against that model's stored repeatability study (:func:`service.research.repeatability.judge_change`)."""
    from service.reports.assemble import calibration_for
    from service.research.calibration import calibrated_rating
    from service.research.repeatability import judge_change, visit_repeats

    calibration = repository.latest_calibration()
    studies: dict[str, object] = {}
    rows: list[dict] = []
    first: dict[str, tuple[float, int]] = {}
    previous: dict[str, tuple[float, int]] = {}
    for entry in repository.timeline(patient_id, issuer):
        appraisal = entry.appraisal
        score = appraisal.primary_score
        if score is None:
            continue
        model = appraisal.model_id_hash
        if model not in studies:
            studies[model] = repository.latest_repeatability(model)
        fit = calibration_for(calibration, model)
        calibrated = calibrated_rating(fit, score) if fit else None
        repeats = visit_repeats(appraisal.settings)

        def change(since: dict[str, tuple[float, int]]) -> tuple[float | None, dict | None]:
            if model not in since:
                return None, None
            earlier, earlier_repeats = since[model]
            judged = judge_change(score - earlier, studies[model], repeats=(earlier_repeats, repeats))
            return judged.change, judged.to_dict()

        since_baseline, baseline_judgement = change(first)
        since_previous, previous_judgement = change(previous)
        rows.append({
            "appraisal_id": appraisal.id, "at": entry.at.isoformat() if entry.at else None,
            "study_description": entry.study.study_description, "score": score,
            "change_since_baseline": since_baseline, "change_since_previous": since_previous,
            "change_since_baseline_vs_noise": baseline_judgement,
            "change_since_previous_vs_noise": previous_judgement,
            "repeats": repeats,
            "repeat_primary_scores": None if appraisal.repeats is None else list(appraisal.repeats.primary_scores),
            "calibrated": None if calibrated is None else calibrated.to_dict(),
            "model": appraisal.model_name, "model_identity": model, "non_clinical": appraisal.non_clinical,
            "scores": [s.to_dict() for s in appraisal.scores],
        })
        first.setdefault(model, (score, repeats))
        previous[model] = (score, repeats)
    return rows


def timeline_command(
    patient_id: Annotated[str, typer.Argument(help="Patient ID as in the photos' DICOM header.")],
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer of Patient ID, when the site uses one.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Every score, machine-readable.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the trend chart to this PNG file.")] = None,
) -> None:
    """A patient's appraisals in date order: primary score, change since baseline and previous visit,
    and whether each change exceeds the model's repeatability coefficient (measurement noise)."""
    from pipeline.errors import PipelineError

    repository = _repository()
    try:
        rows = timeline_rows(repository, patient_id, issuer)
    finally:
        repository.close()
    if not rows:
        raise PipelineError(f"No appraisals are recorded for patient {patient_id}.")
    if plot is not None:
        from service.reports.charts import render_timeline_png
        from service.reports.request import TimelinePoint

        points = [TimelinePoint(when=dt.datetime.fromisoformat(r["at"]), score=r["score"],
                                study_description=r["study_description"], is_current=index == len(rows) - 1,
                                model_identity=r["model_identity"])
                  for index, r in enumerate(rows) if r["at"]]
        plot.write_bytes(render_timeline_png(points, None))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        change = "" if row["change_since_baseline"] is None else (
            f"  Δbaseline {row['change_since_baseline']:+.3f} ({row['change_since_baseline_vs_noise']['text']})"
            f"  Δprevious {row['change_since_previous']:+.3f} ({row['change_since_previous_vs_noise']['text']})")
        calibrated = "" if row["calibrated"] is None else (
            f"  rating {row['calibrated']['value']:.1f} [{row['calibrated']['low']:.1f}, {row['calibrated']['high']:.1f}]")
        label = "  NON-CLINICAL" if row["non_clinical"] else ""
        spread = "" if not row["repeat_primary_scores"] else (
            f" (mean of {row['repeats']} repeats ± {statistics.stdev(row['repeat_primary_scores']):.3f} SD)")
        typer.echo(f"{row['at'] or 'date unknown'}  {row['study_description'] or '-'}  S={row['score']:.3f}{spread}"
                   f"{change}{calibrated}{label}")


def calibrate_command(
    ratings: Annotated[Path, typer.Argument(help="CSV with columns photo (file or SOP Instance UID) and rating (mean, 1–7).")],
    bundle: Annotated[str | None, typer.Option("--bundle", help="Bundle that scores photo files (default $CLEFTSCORE_BUNDLE).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Score photo files with the demo bundle (non-clinical).")] = False,
) -> None:
    """Fit the linear map from score to the 1–7 human rating, with its uncertainty, and store it for reports."""
    from service.cli.errors import UsageFailure
    from service.research.calibration import read_ratings
    from service.research.ratings import fit_and_save, scores_for_rows

    repository = _repository()
    try:
        rows = read_ratings(ratings)
        scored = scores_for_rows(repository, rows, ratings.parent, bundle=bundle, demo=demo)
        fit, calibration_id = fit_and_save(repository, scored, ratings)
    except (ValueError, OSError) as error:
        raise UsageFailure(f"Cannot calibrate: {error}") from error
    finally:
        repository.close()
    typer.echo(f"rating ≈ {fit.intercept:.3f} (±{fit.intercept_se:.3f}) + {fit.slope:.3f} (±{fit.slope_se:.3f}) · S; "
               f"residual sd {fit.residual_sd:.3f}, r = {fit.pearson_r:.3f}, n = {fit.n}; stored as calibration "
               f"{calibration_id} for model {fit.model_identity[:12]}")


def report_command(
    appraisal_id: Annotated[int, typer.Argument(help="Appraisal number (see `cleftscore timeline --json`).")],
    out: Annotated[Path, typer.Option("--out", help="PDF file to write.")],
) -> None:
    """Write the PDF report of an appraisal (the one sent to the PACS), as stored."""
    from service.research.ratings import stored_report_pdf

    repository = _repository()
    try:
        pdf = stored_report_pdf(repository, appraisal_id)
    finally:
        repository.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(pdf)
    typer.echo(f"appraisal {appraisal_id} → {out}")
