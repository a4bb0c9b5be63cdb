"""Repeatability: how far one photo's score moves when the method runs again, and whether a change is real.

The score depends on the inversion's random start (noise maps and latent jitter, seeded by
``InversionSettings.seed``). A repeatability study appraises every photo of a folder K times
with the seeds :func:`pipeline.appraise.repeat_seeds` (``seed``, ``seed + 1``, …; the photo is
preprocessed once, :attr:`AppraisalSettings.repeats`), each repeat one inversion and one
adaptation, and for every score variant computes (Bland & Altman 1996, "Measurement error"):

* the pooled within-photo standard deviation s_w = sqrt(mean over photos of the per-photo
  sample variances, K − 1 denominators), i.e. the square root of the within-subject mean
  square of a one-way ANOVA with photos as groups; n photos give n(K − 1) degrees of freedom;
* the repeatability coefficient RC = 1.96·√2·s_w ≈ 2.77·s_w: two appraisals of the same photo
  differ by less than RC in 95 % of cases;
* the RC's confidence interval from the chi-square distribution of the pooled variance,
  ν·s_w²/σ_w² ~ χ²(ν), ν = n(K − 1) (``scipy.stats.chi2``):
  σ_w² ∈ [ν·s_w² / χ²_{1−α/2, ν}, ν·s_w² / χ²_{α/2, ν}], and RC's bounds are 1.96·√2·σ_w at those.

:func:`judge_change` then says whether a change between two visits of one model exceeds that
model's RC. A visit scored as the mean of K repeats (``CLEFTSCORE_REPEATS``) has within-photo
variance s_w²/K, so the difference of visits with K₁ and K₂ repeats has the coefficient
1.96·s_w·sqrt(1/K₁ + 1/K₂) = RC·sqrt((1/K₁ + 1/K₂)/2), which is RC for two single runs.
Photos the method refuses (no face, not frontal, …) are listed and excluded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from db.records import RepeatabilityStudy, VariantRepeatability
from pipeline.errors import PipelineError
from pipeline.vocabulary import NON_CLINICAL_LABEL, PRIMARY_VARIANT, ScoreVariant
from service.research.evaluate import table_order, write_csv

if TYPE_CHECKING:  # pragma: no cover - torch-backed types, imported where they are used
    from pipeline.appraise import AppraisalSettings
    from pipeline.models.bundle import ModelBundle, ModelIdentity
    from pipeline.progress import Progress

#: RC = RC_FACTOR × within-photo SD (Bland–Altman: 1.96·√2 ≈ 2.77).
RC_FACTOR = 1.96 * math.sqrt(2.0)
CONFIDENCE = 0.95
#: Files of the images folder that are appraised (case-insensitive); others are listed as ignored.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
NO_STUDY = ("no repeatability study stored for this model; whether this change exceeds measurement noise "
            "is unknown")


class RepeatabilityInputError(ValueError):
    """The images folder or the options cannot be used; one line naming every problem."""


# --- statistics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WithinPhotoSpread:
    """One variant's repeatability over n photos × K repeats (module docstring)."""

    photos: int
    repeats: int
    within_sd: float
    rc: float
    rc_low: float
    rc_high: float
    confidence: float

    @property
    def degrees_of_freedom(self) -> int:
        return self.photos * (self.repeats - 1)


def within_photo_spread(scores: Any, confidence: float = CONFIDENCE) -> WithinPhotoSpread:
    """Pooled within-photo SD, RC and the RC's chi-square interval of ``scores`` [n photos, K repeats]."""
    data = np.asarray(scores, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 2:
        raise ValueError(f"scores must be [n >= 1 photos, K >= 2 repeats], got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("scores must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    n, k = data.shape
    pooled = float(np.mean(np.var(data, axis=1, ddof=1)))
    dof = n * (k - 1)
    alpha = 1.0 - confidence
    low_var = dof * pooled / float(stats.chi2.ppf(1.0 - alpha / 2.0, dof))
    high_var = dof * pooled / float(stats.chi2.ppf(alpha / 2.0, dof))
    sd = math.sqrt(pooled)
    return WithinPhotoSpread(photos=n, repeats=k, within_sd=sd, rc=RC_FACTOR * sd,
                             rc_low=RC_FACTOR * math.sqrt(low_var), rc_high=RC_FACTOR * math.sqrt(high_var),
                             confidence=confidence)


# --- is a change real? -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeJudgement:
    """Whether a score change between two visits exceeds measurement noise.

    ``rc``: the coefficient that applies to these two visits (None without a study or without
    a figure for the variant); ``exceeds``: |change| > rc (None when unknown); ``text``: one
    sentence for people, e.g. "change −0.41 exceeds the repeatability coefficient 0.18".
    """

    change: float
    rc: float | None
    exceeds: bool | None
    text: str
    study_rc: float | None = None
    repeats: tuple[int, int] = (1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"exceeds_noise": self.exceeds, "repeatability_coefficient": self.rc, "text": self.text,
                "study_repeatability_coefficient": self.study_rc, "visit_repeats": list(self.repeats)}


def significant_decimals(value: float) -> int:
    """Enough decimals to show ``value`` (>= 0) with two significant figures, at least 2 (at most 6)."""
    if value <= 0 or not math.isfinite(value):
        return 2
    return int(min(6, max(2, 1 - math.floor(math.log10(value)))))


def _signed(value: float, decimals: int) -> str:
    text = f"{abs(value):.{decimals}f}"
    return ("−" if value < 0 and float(text) != 0 else "+") + text


def judge_change(change: float, study: RepeatabilityStudy | None, *, repeats: tuple[int, int] = (1, 1),
                 variant: ScoreVariant = PRIMARY_VARIANT) -> ChangeJudgement:
    """Whether ``change`` (a later visit's score minus an earlier one's, both of the study's model)
    exceeds the repeatability coefficient of ``variant``; ``repeats``: how many normalisations each
    visit's score averaged (module docstring). The one judgement behind the timeline and the PDF."""
    if isinstance(change, bool) or not isinstance(change, (int, float)) or not math.isfinite(change):
        raise ValueError(f"change must be a finite number, got {change!r}")
    if len(repeats) != 2 or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in repeats):
        raise ValueError(f"repeats must be two integers >= 1, got {repeats!r}")
    change, repeats = float(change), (int(repeats[0]), int(repeats[1]))
    if study is None:
        return ChangeJudgement(change, None, None, NO_STUDY, None, repeats)
    figures = study.for_variant(variant)
    if figures is None:
        return ChangeJudgement(change, None, None, "the stored repeatability study of this model has no figure for "
                               "this score variant; whether this change exceeds measurement noise is unknown",
                               None, repeats)
    rc = figures.rc if repeats == (1, 1) else figures.rc * math.sqrt((1 / repeats[0] + 1 / repeats[1]) / 2)
    decimals = significant_decimals(rc)
    exceeds = abs(change) > rc
    if exceeds:
        text = f"change {_signed(change, decimals)} exceeds the repeatability coefficient {rc:.{decimals}f}"
    else:
        text = f"within measurement noise (repeatability coefficient {rc:.{decimals}f})"
    return ChangeJudgement(change, rc, exceeds, text, figures.rc, repeats)


def visit_repeats(settings: Mapping[str, Any] | None) -> int:
    """How many normalisations a stored appraisal's scores average (its settings record; 1 when absent)."""
    value = (settings or {}).get("repeats", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def stored_study(config, model_identity: str) -> tuple[RepeatabilityStudy | None, str]:
    """The latest study stored for ``model_identity`` in the configured database, or None and why not.

    Reads only: a missing SQLite file is not created, and a database that cannot be read is a reason."""
    import sqlalchemy as sa

    from service.config.settings import redact_url
    from service.runtime.database import DatabaseNotReadyError, open_repository

    url = sa.make_url(config.effective_database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None, f"not available: there is no database at {url.database} (no study has been stored)"
    try:
        repository = open_repository(config, migrate=False)
    except DatabaseNotReadyError as error:
        return None, f"not available: {error}"
    except sa.exc.SQLAlchemyError as error:
        return None, (f"not available: the database {redact_url(config.effective_database_url)} cannot be read "
                      f"({str(error).splitlines()[0]})")
    try:
        study = repository.latest_repeatability(model_identity)
    except sa.exc.SQLAlchemyError as error:
        return None, f"not available: the study cannot be read ({str(error).splitlines()[0]})"
    finally:
        repository.close()
    if study is None:
        return None, (f"not available: no repeatability study is stored for model {model_identity[:12]} "
                      "(run `cleftscore repeatability` with this model)")
    return study, ""


# --- the study -------------------------------------------------------------------------------------------------


def find_photos(images_dir: Path) -> tuple[list[Path], list[str]]:
    """The photos of ``images_dir`` (files ending in :data:`PHOTO_SUFFIXES`, sorted by name) and the names
    of the other files; RepeatabilityInputError when it is not a folder or holds no photo."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise RepeatabilityInputError(f"--images {images_dir} is not a folder.")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    photos = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES]
    if not photos:
        raise RepeatabilityInputError(f"The images folder {images_dir} holds no photos "
                                      f"({', '.join(PHOTO_SUFFIXES)}).")
    return photos, [p.name for p in files if p not in photos]


def check_readable(photos: Sequence[Path]) -> None:
    """Decode every photo once; RepeatabilityInputError naming every one that cannot be read."""
    from pipeline.preprocess.photo_io import load_photo

    problems = []
    for path in photos:
        try:
            load_photo(path)
        except PipelineError as error:
            problems.append(f"{path.name} ({error})")
    if problems:
        raise RepeatabilityInputError(f"{len(problems)} photo(s) cannot be read: " + "; ".join(problems[:10]) +
                                      (f"; and {len(problems) - 10} more" if len(problems) > 10 else "") + ".")


@dataclass(frozen=True)
class PhotoRepeats:
    """One photo's K repeats: ``scores`` maps each variant to its K scores (None when refused)."""

    file: str
    sha256: str
    scores: Mapping[ScoreVariant, tuple[float, ...]] | None
    error: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.scores is not None


def appraise_repeats(photos: Sequence[Path], bundle: ModelBundle, settings: AppraisalSettings, *,
                     progress: Callable[[Progress], None] | None = None,
                     on_photo: Callable[[int, PhotoRepeats], None] | None = None) -> list[PhotoRepeats]:
    """Appraise every photo ``settings.repeats`` times (preprocessed once; seeds from the settings)."""
    from pipeline.appraise import WStatsCache, appraise
    from pipeline.preprocess.photo_io import load_photo

    if settings.repeats < 2:
        raise ValueError(f"a repeatability study needs settings.repeats >= 2, got {settings.repeats}")
    w_stats = WStatsCache()
    outcomes = []
    for index, path in enumerate(photos):
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        try:
            result = appraise(load_photo(data), bundle, settings, progress, w_stats_cache=w_stats)
        except PipelineError as error:
            outcome = PhotoRepeats(Path(path).name, sha, None, type(error).__name__, str(error))
        else:
            outcome = PhotoRepeats(Path(path).name, sha, {item.variant: result.repeats.values(item.variant)
                                                          for item in result.scores})
        outcomes.append(outcome)
        if on_photo is not None:
            on_photo(index + 1, outcome)
    return outcomes


@dataclass(frozen=True)
class RepeatabilityRun:
    """Everything a study learned; :func:`study_record` and :func:`write_outputs` turn it into a record and files.

    ``settings`` are one measurement's (``repeats`` 1); ``seeds`` the K repeats' inversion seeds.
    """

    outcomes: tuple[PhotoRepeats, ...]
    spreads: Mapping[ScoreVariant, WithinPhotoSpread]
    model: ModelIdentity
    settings: AppraisalSettings
    repeats: int
    seeds: tuple[int, ...]
    ignored_files: tuple[str, ...] = ()

    @property
    def scored(self) -> list[PhotoRepeats]:
        return [o for o in self.outcomes if o.ok]

    @property
    def refused(self) -> list[PhotoRepeats]:
        return [o for o in self.outcomes if not o.ok]


def summarise(outcomes: Sequence[PhotoRepeats],
              confidence: float = CONFIDENCE) -> dict[ScoreVariant, WithinPhotoSpread]:
    """Every variant scored for all the scored photos, in Table 1's order, with its spread."""
    scored = [o for o in outcomes if o.ok]
    if not scored:
        raise RepeatabilityInputError("The method refused every photo, so there is nothing to measure: "
                                      + "; ".join(f"{o.file}: {o.reason}" for o in outcomes[:5]))
    common = set(scored[0].scores).intersection(*(o.scores for o in scored[1:]))
    return {variant: within_photo_spread([o.scores[variant] for o in scored], confidence)
            for variant in sorted(common, key=table_order)}


def run_repeatability(photos: Sequence[Path], bundle: ModelBundle, settings: AppraisalSettings, repeats: int, *,
                      ignored_files: Sequence[str] = (), progress: Callable[[Progress], None] | None = None,
                      on_photo: Callable[[int, PhotoRepeats], None] | None = None) -> RepeatabilityRun:
    """Appraise ``photos`` ``repeats`` times each with ``settings`` (whose own ``repeats`` is replaced); summarise."""
    from pipeline.appraise import repeat_seeds

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise RepeatabilityInputError(f"--repeats must be at least 2 (one appraisal has no spread), got {repeats!r}.")
    outcomes = appraise_repeats(photos, bundle, replace(settings, repeats=repeats), progress=progress,
                                on_photo=on_photo)
    return RepeatabilityRun(tuple(outcomes), summarise(outcomes), bundle.identity, replace(settings, repeats=1),
                            repeats, repeat_seeds(settings.inversion.seed, repeats), tuple(ignored_files))


def study_record(run: RepeatabilityRun, *, created_at: datetime, tool_version: str) -> RepeatabilityStudy:
    """The run as the record the repositories store (provenance: photo hashes, K, seeds, settings, version)."""
    scored = run.scored
    return RepeatabilityStudy(
        model_identity=run.model.identity, model_name=run.model.name, non_clinical=run.model.non_clinical,
        photos=len(scored), repeats=run.repeats, confidence=next(iter(run.spreads.values())).confidence,
        variants=tuple(VariantRepeatability(variant, s.within_sd, s.rc, s.rc_low, s.rc_high)
                       for variant, s in run.spreads.items()),
        created_at=created_at,
        provenance={"photo_sha256": [o.sha256 for o in scored], "repeats": run.repeats, "seeds": list(run.seeds),
                    "settings": run.settings.to_dict(), "tool_version": tool_version,
                    "refused_sha256": [o.sha256 for o in run.refused]},
    )


# --- outputs ---------------------------------------------------------------------------------------------------

_VARIANT_COLUMNS = ("method", "processing", "region", "adaptation", "erosion_order")


def repeat_rows(run: RepeatabilityRun) -> list[dict[str, Any]]:
    """repeats.csv: one row per scored photo × repeat × variant."""
    rows = []
    for outcome in run.scored:
        for variant in run.spreads:
            for index, (seed, score) in enumerate(zip(run.seeds, outcome.scores[variant])):
                rows.append({"file": outcome.file, "photo_sha256": outcome.sha256, "repeat": index, "seed": seed,
                             "variant": variant.key, **variant.to_dict(),
                             "erosion_order": variant.erosion_order.value if variant.erosion_order else "",
                             "score": score})
    return rows


def summary_record(run: RepeatabilityRun, *, created_at: datetime, tool_version: str,
                   stored_as: int | None) -> dict[str, Any]:
    """repeatability.json."""
    spreads = run.spreads
    first = next(iter(spreads.values()))
    return {
        "label": run.model.label, "non_clinical": run.model.non_clinical,
        "note": (f"{NON_CLINICAL_LABEL}: made with a non-clinical model bundle; these figures say nothing about the "
                 "method's clinical repeatability." if run.model.non_clinical else ""),
        "model": run.model.to_dict(), "settings": run.settings.to_dict(), "tool_version": tool_version,
        "created_at": created_at.isoformat(), "stored_as_study": stored_as,
        "photos": len(run.scored), "photos_listed": len(run.outcomes), "repeats": run.repeats,
        "seeds": list(run.seeds), "degrees_of_freedom": first.degrees_of_freedom, "confidence": first.confidence,
        "method": ("within_sd: pooled within-photo standard deviation, sqrt of the mean of the per-photo sample "
                   "variances (K - 1 denominators); repeatability_coefficient = 1.96 * sqrt(2) * within_sd "
                   "(Bland-Altman); its interval from the chi-square distribution of the pooled variance with "
                   "n(K - 1) degrees of freedom"),
        "primary_variant": PRIMARY_VARIANT.key,
        "variants": {variant.key: {"within_sd": s.within_sd, "repeatability_coefficient": s.rc,
                                   "rc_ci_low": s.rc_low, "rc_ci_high": s.rc_high}
                     for variant, s in spreads.items()},
        "scored": [{"file": o.file, "photo_sha256": o.sha256} for o in run.scored],
        "refused": [{"file": o.file, "photo_sha256": o.sha256, "error": o.error, "reason": o.reason}
                    for o in run.refused],
        "ignored_files": list(run.ignored_files),
    }


def summary_markdown(record: Mapping[str, Any]) -> str:
    """repeatability.md: the figures as a table, the non-clinical label first when it applies."""
    lines = [f"**{record['note']}**", ""] if record["non_clinical"] else []
    model, inv, ada = record["model"], record["settings"]["inversion"], record["settings"]["adaptation"]
    lines += ["# Repeatability of the score", "",
              f"- {record['photos']} photos × {record['repeats']} repeats (seeds {record['seeds']}); "
              f"{len(record['refused'])} refused by the method and excluded.",
              f"- Model bundle {model['name']} (identity {model['identity'][:12]}); inversion {inv['steps']} steps, "
              f"adaptation {ada['steps']} steps.",
              f"- Pooled within-photo SD s_w; repeatability coefficient RC = 1.96·√2·s_w; "
              f"{record['confidence']:.0%} interval of RC from χ² with {record['degrees_of_freedom']} degrees of "
              "freedom. Two appraisals of one photo differ by less than RC in 95 % of cases.", "",
              "| variant | within-photo SD | RC | RC interval |", "|---|---:|---:|---|"]
    for key, figures in record["variants"].items():
        mark = " (primary)" if key == record["primary_variant"] else ""
        lines.append(f"| {key}{mark} | {figures['within_sd']:.4g} | {figures['repeatability_coefficient']:.4g} | "
                     f"[{figures['rc_ci_low']:.4g}, {figures['rc_ci_high']:.4g}] |")
    return "\n".join(lines) + "\n"


def spread_plot(path: Path, run: RepeatabilityRun, variant: ScoreVariant = PRIMARY_VARIANT) -> None:
    """Per-photo SD against per-photo mean of ``variant`` (PNG), with the pooled within-photo SD as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([o.scores[variant] for o in run.scored], dtype=np.float64)
    means, sds = values.mean(axis=1), values.std(axis=1, ddof=1)
    spread = run.spreads[variant]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.scatter(means, sds, s=24, color="tab:blue")
    for outcome, x, y in zip(run.scored, means, sds):
        axis.annotate(outcome.file[:20], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.axhline(spread.within_sd, color="tab:red", linestyle="--",
                 label=f"pooled within-photo SD {spread.within_sd:.3g} (RC {spread.rc:.3g})")
    axis.set_xlabel(f"per-photo mean score over {run.repeats} repeats")
    axis.set_ylabel("per-photo SD (K − 1 denominator)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=7)
    label = run.model.label
    axis.set_title(f"Spread against mean: {variant.key}" + (f"\n{label}" if label else ""), fontsize=8,
                   color="tab:red" if label else "black")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_outputs(folder: Path, run: RepeatabilityRun, record: Mapping[str, Any]) -> None:
    """repeatability.json, repeatability.md, repeats.csv, refused.csv and spread_vs_mean.png into ``folder``."""
    from service.outputs import write_json

    write_json(folder / "repeatability.json", record)
    (folder / "repeatability.md").write_text(summary_markdown(record), encoding="utf-8")
    write_csv(folder / "repeats.csv", repeat_rows(run),
              ("file", "photo_sha256", "repeat", "seed", "variant", *_VARIANT_COLUMNS, "score"))
    write_csv(folder / "refused.csv", [{"file": o.file, "photo_sha256": o.sha256, "error": o.error, "reason": o.reason}
                                       for o in run.refused], ("file", "photo_sha256", "error", "reason"))
    spread_plot(folder / "spread_vs_mean.png", run)
