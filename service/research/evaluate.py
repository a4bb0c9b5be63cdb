"""The paper's Table 1 on a rated photo set: every grid cell against mean human ratings.

Each photo is appraised once (:func:`pipeline.appraise.appraise`, one inversion
and one adaptation) with LPIPS heatmaps and both erosion orders, which yields
every cell of the grid (method.md 6). Results are cached per photo under
``OUT/cache/<photo sha256>-<bundle identity[:12]>-<settings hash>/`` (aligned,
inverted and normalised images, masks, the primary heatmap, scores.json), with
a ``done`` marker written last: an entry without it is recomputed, so a run
stopped part-way resumes where it stopped. Photos the method refuses (no face,
not frontal, …) are cached as refusals, listed in failures.csv and left out of
the statistics. Statistics: :mod:`service.research.stats`. :func:`write_text_outputs`
writes scores.csv, table1.csv, failures.csv and evaluation.json; the command
(:mod:`service.cli.research`) adds table1.md, the scatter plots and the gallery.
(``CLEFTSCORE_REPEATS`` K > 1: each photo's scores are means of K normalisations.)

Beside each cell's correlation with the ratings (validity), :func:`with_repeatability` adds
its repeatability coefficient from the stored study of the same model identity
(:mod:`service.research.repeatability`), or says why there is none, so that a site can pick
a variant that is both valid and repeatable.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from db.records import RepeatabilityStudy, VariantRepeatability
from pipeline.appraise import AppraisalResult, AppraisalSettings
from pipeline.errors import PipelineError
from pipeline.models.bundle import ModelIdentity
from pipeline.progress import Progress
from pipeline.vocabulary import DEFAULT_EROSION_ORDER, HeatmapMethod, Processing, Region, ScoreVariant
from service.research.stats import (
    DEFAULT_BOOTSTRAP,
    CorrelationSummary,
    RaterAgreement,
    correlation_summary,
    rater_agreement,
)

RATING_RANGE = (1.0, 7.0)
CACHE_FORMAT = 1
DONE_MARKER = "done"
#: Paper Table 1, Pearson r × 100 (13 photos; method.md 6), mouth/nose region. The paper does not tie its
#: numbers to an erosion order, so they are keyed without one: (method, processing, adaptation).
PAPER_R100: dict[tuple[HeatmapMethod, Processing, bool], float] = {
    **{(HeatmapMethod.PSE, p, True): v for p, v in zip(Processing, (72.0, 83.1, 79.7, 94.2))},
    **{(HeatmapMethod.LPIPS, p, True): v for p, v in zip(Processing, (74.1, 77.5, 74.3, 76.9))},
    **{(HeatmapMethod.SSIM, p, True): v for p, v in zip(Processing, (63.0, 60.0, 65.6, 55.2))},
    (HeatmapMethod.PSE, Processing.YCBCR_EROSION, False): 79.9,
}


def paper_r100(variant: ScoreVariant) -> float | None:
    """The paper's r × 100 for this variant (either erosion order), where it gives one."""
    if variant.region is not Region.MOUTH_NOSE:
        return None
    return PAPER_R100.get((variant.method, variant.processing, variant.adaptation))


class EvaluationInputError(ValueError):
    """The images folder or the ratings file cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class RatingsTable:
    """Validated ratings: one mean rating per photo file, optional per-rater ratings [n, k] (NaN = missing)."""

    files: tuple[str, ...]
    ratings: np.ndarray
    rater_names: tuple[str, ...]
    rater_matrix: np.ndarray | None
    ignored_columns: tuple[str, ...]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_ratings(ratings_csv: Path, images_dir: Path) -> RatingsTable:
    """Read and check RATINGS.csv (columns ``file``, ``rating``; further numeric columns are raters).

    Raises EvaluationInputError naming every missing file, unreadable or
    out-of-range rating (1–7) and duplicate, all at once.
    """
    ratings_csv, images_dir = Path(ratings_csv), Path(images_dir)
    if not images_dir.is_dir():
        raise EvaluationInputError(f"The images folder {images_dir} does not exist.")
    try:
        with open(ratings_csv, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise EvaluationInputError(f"The ratings file {ratings_csv} cannot be read ({error}).") from error
    if "file" not in header or "rating" not in header:
        raise EvaluationInputError(f"The ratings file {ratings_csv} needs columns 'file' and 'rating'; it has {header}.")
    extra = [name for name in header if name not in ("file", "rating") and name]
    raters = [name for name in extra if all(row[name] == "" or _number(row[name]) is not None for row in rows)]
    problems: list[str] = []
    seen: dict[str, int] = {}
    files, ratings = [], []
    for line, row in enumerate(rows, start=2):
        name, text = row["file"], row["rating"]
        if not name or Path(name).name != name:
            problems.append(f"line {line}: file {name!r} must be a plain file name inside {images_dir}")
            continue
        if name in seen:
            problems.append(f"line {line}: {name} is listed twice (first on line {seen[name]})")
            continue
        seen[name] = line
        if not (images_dir / name).is_file():
            problems.append(f"line {line}: {name} is not in {images_dir}")
        value = _number(text)
        if value is None or not RATING_RANGE[0] <= value <= RATING_RANGE[1]:
            problems.append(f"line {line}: rating {text!r} of {name} is not a number from 1 to 7")
        for rater in raters:
            rated = _number(row[rater]) if row[rater] else None
            if rated is not None and not RATING_RANGE[0] <= rated <= RATING_RANGE[1]:
                problems.append(f"line {line}: rater {rater}'s rating {rated:g} of {name} is outside 1-7")
        files.append(name)
        ratings.append(value if value is not None else math.nan)
    if not rows:
        problems.append("it lists no photos")
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise EvaluationInputError(f"The ratings file {ratings_csv} has {len(problems)} problem(s): {shown}.")
    matrix = None
    if raters:
        matrix = np.array([[_number(row[r]) if row[r] else math.nan for r in raters] for row in rows], dtype=np.float64)
    return RatingsTable(tuple(files), np.asarray(ratings, dtype=np.float64), tuple(raters), matrix,
                        tuple(name for name in extra if name not in raters))


# --- cache -------------------------------------------------------------------------------------------------------


def settings_hash(settings: AppraisalSettings) -> str:
    """16 hex digits identifying everything in ``settings`` that shapes a result."""
    detection = settings.preprocess.detection
    record = {"format": CACHE_FORMAT, "appraisal": settings.to_dict(),
              "detection": {"detector": detection.detector.value, "threshold": detection.threshold,
                            "upsample": detection.upsample, "detect_max_side": detection.detect_max_side,
                            "min_eye_distance_px": detection.min_eye_distance_px}}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def cache_entry(cache_dir: Path, photo_sha256: str, identity: str, settings_digest: str) -> Path:
    return Path(cache_dir) / f"{photo_sha256}-{identity[:12]}-{settings_digest}"


def _write_marker(folder: Path) -> None:
    temporary = folder / f".{DONE_MARKER}.tmp"
    temporary.write_text("1\n", encoding="utf-8")
    os.replace(temporary, folder / DONE_MARKER)


def write_success(folder: Path, file: str, photo_sha256: str, result: AppraisalResult) -> dict[str, Any]:
    """Cache one appraisal; the ``done`` marker goes last. Returns the scores record."""
    from pipeline.appraise import scores_record
    from service.outputs import write_json, write_png

    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_MARKER).unlink(missing_ok=True)
    write_png(folder / "aligned.png", result.aligned)
    write_png(folder / "inverted.png", result.inverted)
    write_png(folder / "normalized.png", result.normalized)
    for region, mask in result.preprocessing.masks.items():
        write_png(folder / "masks" / f"{region}.png", mask)
    np.save(folder / "primary_heatmap.npy", result.primary_heatmap.astype(np.float32), allow_pickle=False)
    record = {"status": "ok", "file": file, "photo_sha256": photo_sha256, **scores_record(result)}
    write_json(folder / "scores.json", record)
    _write_marker(folder)
    return record


def write_refusal(folder: Path, file: str, photo_sha256: str, error: PipelineError) -> dict[str, Any]:
    from service.outputs import write_json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_MARKER).unlink(missing_ok=True)
    record = {"status": "refused", "file": file, "photo_sha256": photo_sha256,
              "error": type(error).__name__, "reason": str(error)}
    write_json(folder / "scores.json", record)
    _write_marker(folder)
    return record


def read_entry(folder: Path) -> dict[str, Any] | None:
    """The cached record, or None when the entry is missing or unfinished."""
    if not (folder / DONE_MARKER).is_file():
        return None
    return json.loads((folder / "scores.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class PhotoOutcome:
    """One photo's cached result: ``record`` is scores.json; ``folder`` its cache entry."""

    file: str
    rating: float
    folder: Path
    record: dict[str, Any]
    computed: bool

    @property
    def ok(self) -> bool:
        return self.record["status"] == "ok"


@dataclass(frozen=True)
class PhotoEvent:
    """Reported after each photo: ``status`` is computed, cached, refused or refused (cached)."""

    index: int
    total: int
    file: str
    status: str


def appraise_photos(
    table: RatingsTable,
    images_dir: Path,
    bundle,
    settings: AppraisalSettings,
    cache_dir: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    on_photo: Callable[[PhotoEvent], None] | None = None,
) -> list[PhotoOutcome]:
    """Appraise every listed photo once, reusing finished cache entries."""
    from pipeline.appraise import WStatsCache, appraise
    from pipeline.preprocess.photo_io import load_photo

    digest = settings_hash(settings)
    w_stats = WStatsCache()
    outcomes = []
    for index, (file, rating) in enumerate(zip(table.files, table.ratings)):
        data = (Path(images_dir) / file).read_bytes()
        photo_sha = hashlib.sha256(data).hexdigest()
        folder = cache_entry(cache_dir, photo_sha, bundle.identity.identity, digest)
        record, computed = read_entry(folder), False
        if record is None:
            computed = True
            try:
                result = appraise(load_photo(data), bundle, settings, progress, w_stats_cache=w_stats)
            except PipelineError as error:
                record = write_refusal(folder, file, photo_sha, error)
            else:
                record = write_success(folder, file, photo_sha, result)
        outcome = PhotoOutcome(file, float(rating), folder, record, computed)
        outcomes.append(outcome)
        if on_photo is not None:
            status = ("computed" if computed else "cached") if outcome.ok else ("refused" if computed else "refused (cached)")
            on_photo(PhotoEvent(index + 1, len(table.files), file, status))
    return outcomes


# --- statistics --------------------------------------------------------------------------------------------------

def table_order(variant: ScoreVariant) -> tuple:
    """Table order: with adaptation first, then region, method, processing, journal erosion order first."""
    def rank(member) -> int:
        return list(type(member)).index(member)

    return (not variant.adaptation, rank(variant.region), rank(variant.method), rank(variant.processing),
            variant.erosion_order is not None and variant.erosion_order is not DEFAULT_EROSION_ORDER,
            "" if variant.erosion_order is None else variant.erosion_order.value)


def _csv_variant(variant: ScoreVariant) -> dict[str, Any]:
    """A variant's columns in scores.csv and table1.csv (no erosion order: empty)."""
    return {**variant.to_dict(), "erosion_order": variant.erosion_order.value if variant.erosion_order else ""}


def score_rows(outcomes: Sequence[PhotoOutcome]) -> list[dict[str, Any]]:
    """scores.csv: one row per scored photo × variant."""
    rows = []
    for outcome in outcomes:
        if outcome.ok:
            for score in outcome.record["scores"]:
                rows.append({"file": outcome.file, "rating": outcome.rating,
                             **_csv_variant(ScoreVariant.from_dict(score)), "score": score["score"]})
    return rows


@dataclass(frozen=True)
class Table1Row:
    """One grid cell's agreement with the ratings; ``paper_r100`` is the paper's r × 100 where it gives one;
    ``repeatability`` the cell's figures in the stored repeatability study of the same model, when there is one."""

    key: ScoreVariant
    summary: CorrelationSummary
    paper_r100: float | None
    repeatability: VariantRepeatability | None = None

    def to_dict(self) -> dict[str, Any]:
        s, rc = self.summary, self.repeatability
        return {**_csv_variant(self.key), "n": s.n, "pearson_r": s.pearson_r, "ci_low": s.ci_low,
                "ci_high": s.ci_high, "spearman_rho": s.spearman_rho, "bootstrap_used": s.bootstrap_used,
                "paper_r": None if self.paper_r100 is None else round(self.paper_r100 / 100.0, 4),
                "within_photo_sd": None if rc is None else rc.within_sd,
                "repeatability_coefficient": None if rc is None else rc.rc,
                "rc_ci_low": None if rc is None else rc.rc_low, "rc_ci_high": None if rc is None else rc.rc_high}


def series(outcomes: Sequence[PhotoOutcome]) -> tuple[np.ndarray, dict[ScoreVariant, np.ndarray]]:
    """Ratings of the scored photos and, per variant, their scores in the same order."""
    scored = [o for o in outcomes if o.ok]
    ratings = np.array([o.rating for o in scored], dtype=np.float64)
    values: dict[ScoreVariant, list[float]] = {}
    for outcome in scored:
        for score in outcome.record["scores"]:
            values.setdefault(ScoreVariant.from_dict(score), []).append(float(score["score"]))
    return ratings, {key: np.asarray(v) for key, v in values.items() if len(v) == len(scored)}


def table1(outcomes: Sequence[PhotoOutcome], bootstrap: int, seed: int) -> list[Table1Row]:
    """Pearson r (bootstrap 95 % CI) and Spearman ρ of every variant's score against the mean rating.

    Every variant gets a fresh ``numpy.random.default_rng(seed)``, so all
    variants share the same resamples (a paired bootstrap).
    """
    ratings, scores = series(outcomes)
    rows = []
    for key in sorted(scores, key=table_order):
        summary = correlation_summary(ratings, scores[key], np.random.default_rng(seed), bootstrap)
        rows.append(Table1Row(key, summary, paper_r100(key)))
    return rows


# --- outputs -----------------------------------------------------------------------------------------------------

def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


@dataclass(frozen=True)
class EvaluationRun:
    """Everything :func:`run_evaluation` learned; the writers turn it into files."""

    table: RatingsTable
    outcomes: tuple[PhotoOutcome, ...]
    rows: tuple[Table1Row, ...]
    agreement: RaterAgreement | None
    model: ModelIdentity
    settings: AppraisalSettings
    bootstrap: int
    seed: int
    repeatability: RepeatabilityStudy | None = None
    #: Why no repeatability figures are given ("" when ``repeatability`` is set).
    repeatability_note: str = "not looked up"

    @property
    def scored(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def refused(self) -> list[PhotoOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def computed(self) -> int:
        return sum(o.computed for o in self.outcomes)


def run_evaluation(
    images_dir: Path,
    ratings_csv: Path,
    out: Path,
    bundle,
    settings: AppraisalSettings,
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Callable[[Progress], None] | None = None,
    on_photo: Callable[[PhotoEvent], None] | None = None,
) -> EvaluationRun:
    """Validate the inputs, appraise (or reuse from OUT/cache) every photo, and compute Table 1.

    Writes only the cache; :func:`write_text_outputs` and the CLI write the rest.
    Inter-rater agreement uses every listed photo (ratings do not depend on the method).
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise EvaluationInputError(f"--bootstrap must be a positive integer, got {bootstrap!r}.")
    table = read_ratings(ratings_csv, images_dir)
    outcomes = appraise_photos(table, images_dir, bundle, settings, Path(out) / "cache", progress=progress,
                               on_photo=on_photo)
    agreement = None
    if table.rater_matrix is not None and table.rater_matrix.shape[1] >= 2:
        agreement = rater_agreement(table.rater_matrix)
    return EvaluationRun(table, tuple(outcomes), tuple(table1(outcomes, bootstrap, seed)), agreement,
                         bundle.identity, settings, bootstrap, seed)


def with_repeatability(run: EvaluationRun, study: RepeatabilityStudy | None, why_not: str) -> EvaluationRun:
    """``run`` with every Table 1 row's figures from ``study`` (of the run's model), or with ``why_not`` none are given.

    A study made with other inversion or adaptation settings, or in another mode, measured another
    noise; the note says so."""
    if study is None:
        return replace(run, repeatability=None, repeatability_note=why_not or "not available")
    if study.model_identity != run.model.identity:
        raise ValueError("the repeatability study was made with another model; its figures do not apply")
    rows = tuple(replace(row, repeatability=study.for_variant(row.key)) for row in run.rows)
    measured = dict(study.provenance.get("settings") or {})
    ours = replace(run.settings, repeats=1).to_dict()
    differ = [name for name in ("inversion", "adaptation", "mode") if measured.get(name) != ours.get(name)]
    note = "" if not differ else (f"the stored study was made with other {', '.join(differ)} settings than this "
                                  "evaluation; its figures describe that noise")
    return replace(run, rows=rows, repeatability=study, repeatability_note=note)


def repeatability_record(run: EvaluationRun) -> dict[str, Any]:
    """evaluation.json's "repeatability": the study used (or why none) for every row's RC."""
    study = run.repeatability
    if study is None:
        return {"available": False, "why_not": run.repeatability_note}
    return {"available": True, "note": run.repeatability_note, "created_at": study.created_at.isoformat(),
            "photos": study.photos, "repeats": study.repeats, "confidence": study.confidence,
            "non_clinical": study.non_clinical, "seeds": study.provenance.get("seeds")}


def write_text_outputs(folder: Path, run: EvaluationRun) -> None:
    """scores.csv, table1.csv, failures.csv and evaluation.json into ``folder`` (table1.md: :mod:`service.cli.research`)."""
    from service.outputs import write_json

    write_csv(folder / "scores.csv", score_rows(run.outcomes),
              ("file", "rating", "method", "processing", "region", "adaptation", "erosion_order", "score"))
    table_rows = [row.to_dict() for row in run.rows]
    write_csv(folder / "table1.csv", table_rows,
              ("method", "processing", "region", "adaptation", "erosion_order", "n", "pearson_r", "ci_low", "ci_high",
               "spearman_rho", "bootstrap_used", "paper_r", "within_photo_sd", "repeatability_coefficient", "rc_ci_low",
               "rc_ci_high"))
    write_csv(folder / "failures.csv",
              [{"file": o.file, "rating": o.rating, "error": o.record["error"], "reason": o.record["reason"]}
               for o in run.refused], ("file", "rating", "error", "reason"))
    write_json(folder / "evaluation.json", {
        "label": run.model.label, "non_clinical": run.model.non_clinical, "model": run.model.to_dict(),
        "settings": run.settings.to_dict(), "bootstrap": run.bootstrap, "seed": run.seed,
        "photos": len(run.outcomes), "scored": run.scored, "refused": len(run.refused), "computed_this_run": run.computed,
        "inter_rater": None if run.agreement is None else run.agreement.to_dict(),
        "ignored_columns": list(run.table.ignored_columns), "repeatability": repeatability_record(run),
        "table1": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                   for row in table_rows],
    })
