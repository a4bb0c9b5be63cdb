"""``cleftscore evaluate`` (paper Table 1 on rated photos), ``cleftscore repeatability`` (the score's
measurement noise) and ``cleftscore simulate`` (implanted defects).

The computing lives in :mod:`service.research.evaluate`, :mod:`service.research.repeatability` and
:mod:`service.research.simulate`; this module holds the commands and the evaluation's presentation
(table1.md, the scatter plots of paper Fig. 11, the heatmap gallery).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from pipeline.vocabulary import PRIMARY_VARIANT, HeatmapMethod, Processing, ScoreVariant, ascii_text
from service.cli.options import (
    AdaptOption,
    BundleOption,
    DemoOption,
    DeviceOption,
    StepsOption,
    StoreOption,
    appraisal_config,
)

if TYPE_CHECKING:  # pragma: no cover
    from service.research.evaluate import EvaluationRun, PhotoOutcome, Table1Row


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
    app.command("repeatability")(repeatability_command)
    app.command("simulate")(simulate_command)


def _models_and_settings(bundle: str | None, demo: bool, store: Path | None, steps: int | None,
                         adapt_steps: int | None, device: str | None, both_orders: bool):
    """Load the bundle and build the appraisal settings (LPIPS heatmaps on; journal erosion order first)."""
    from pipeline.compare.heatmaps import ErosionOrder
    from service.cli.errors import UsageFailure
    from service.config.appraisal import BOTH_EROSION_ORDERS, settings_from
    from service.runtime.model_store import open_bundle

    if demo and bundle is not None:
        raise UsageFailure("Give either --bundle or --demo, not both.")
    config = appraisal_config(bundle=bundle, demo=demo, steps=steps, adapt_steps=adapt_steps, device=device)
    orders = BOTH_EROSION_ORDERS if both_orders else (ErosionOrder.DIFF_THEN_ERODE,)
    settings = settings_from(config, erosion_orders=orders, lpips_heatmaps=True)
    models = open_bundle(store or config.models_dir, config.bundle, demo=config.demo, device=settings.device)
    return models, settings, config


def evaluate_command(
    images: Annotated[Path, typer.Option("--images", help="Folder with the photos named in the ratings file.")],
    ratings: Annotated[Path, typer.Option("--ratings", help="CSV: file, rating (mean, 1-7); further numeric columns = raters.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder; OUT/cache keeps per-photo results between runs.")],
    bundle: BundleOption = None,
    demo: DemoOption = False,
    steps: StepsOption = None,
    adapt_steps: AdaptOption = None,
    device: DeviceOption = None,
    both_erosion_orders: Annotated[bool, typer.Option("--both-erosion-orders/--journal-order-only",
                                                      help="Score both erosion orders (arXiv and journal) or the journal's only.")] = True,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95 % intervals.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    store: StoreOption = None,
) -> None:
    """Score rated photos with every Table 1 variant and correlate the scores with the human ratings.

    Each photo is normalised once (cached in OUT/cache; a rerun resumes). Writes
    OUT/scores.csv, table1.csv, table1.md, failures.csv, evaluation.json,
    plots/*.png (paper Fig. 11) and gallery.png.
    """
    from service.cli.errors import UsageFailure
    from service.outputs import staged_output_dir, write_png
    from service.research.evaluate import (
        EvaluationInputError,
        read_ratings,
        run_evaluation,
        with_repeatability,
        write_text_outputs,
    )
    from service.research.repeatability import stored_study

    if bootstrap < 1:
        raise UsageFailure(f"--bootstrap must be at least 1, got {bootstrap}.")
    try:
        read_ratings(ratings, images)  # refuse bad inputs before loading the models
    except EvaluationInputError as error:
        raise UsageFailure(str(error)) from None
    models, settings, config = _models_and_settings(bundle, demo, store, steps, adapt_steps, device,
                                                    both_erosion_orders)

    def announce(event) -> None:
        typer.echo(f"[{event.index}/{event.total}] {event.file}: {event.status}")

    try:
        run = run_evaluation(images, ratings, out, models, settings, bootstrap=bootstrap, seed=seed, on_photo=announce)
    except EvaluationInputError as error:
        raise UsageFailure(str(error)) from None
    except KeyboardInterrupt:
        raise UsageFailure(f"Interrupted; finished photos are cached in {out / 'cache'}. "
                           "Run the same command again to resume.") from None
    run = with_repeatability(run, *stored_study(config, run.model.identity))
    label = run.model.label
    with staged_output_dir(out) as staging:
        write_text_outputs(staging, run)
        (staging / "table1.md").write_text(table1_markdown(run.rows, report_header(run)), encoding="utf-8")
        scatter_plots(staging / "plots", run.outcomes, run.rows, label)
        write_png(staging / "gallery.png", gallery(run.outcomes, label))
    primary = next((row for row in run.rows if row.key == PRIMARY_VARIANT), None)
    summary = "" if primary is None else f"; primary variant r = {_fmt(primary.summary.pearson_r)}"
    if primary is not None and primary.repeatability is not None:
        summary += f", repeatability coefficient {_fmt(primary.repeatability.rc)}"
    typer.echo(f"{len(run.outcomes)} photos ({run.computed} appraised now, {len(run.outcomes) - run.computed} from the cache): "
               f"{run.scored} scored, {len(run.refused)} refused and excluded (failures.csv){summary} → {out}"
               + (f"  [{label}]" if label else ""))


def repeatability_command(
    images: Annotated[Path, typer.Option("--images", help="Folder of photos (.jpg, .jpeg, .png, .tif, .tiff).")],
    repeats: Annotated[int, typer.Option("--repeats", help="K: appraisals of every photo, one seed each (>= 2).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (written only on success).")],
    bundle: BundleOption = None,
    demo: DemoOption = False,
    steps: StepsOption = None,
    adapt_steps: AdaptOption = None,
    device: DeviceOption = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not store the study in the database (stored by "
                                                              "default, for this model's timelines, reports and "
                                                              "evaluations).")] = False,
    store: StoreOption = None,
) -> None:
    """Measure how far the score of one photo moves when it is appraised again with other seeds.

    Every photo is preprocessed once and normalised K times (seeds: the inversion seed, +1, …; one
    inversion and adaptation each, whatever CLEFTSCORE_REPEATS says). For every Table 1 variant:
    the pooled within-photo SD and the repeatability coefficient RC = 2.77 × SD with its 95 %
    interval. Writes OUT/repeatability.json, repeatability.md, repeats.csv (every photo × repeat ×
    variant), refused.csv and spread_vs_mean.png, and stores the study for the model unless --no-store.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from sqlalchemy.exc import SQLAlchemyError

    from db.timeutil import utc_now
    from service.cli.errors import UsageFailure
    from service.config.settings import redact_url
    from service.outputs import staged_output_dir
    from service.research.repeatability import (
        RepeatabilityInputError,
        check_readable,
        find_photos,
        run_repeatability,
        study_record,
        summary_record,
        write_outputs,
    )
    from service.runtime.database import open_repository
    from service.runtime.results import software_version

    if repeats < 2:
        raise UsageFailure(f"--repeats must be at least 2 (one appraisal has no spread), got {repeats}.")
    try:
        photos, ignored = find_photos(images)
        check_readable(photos)  # refuse bad inputs before loading the models
    except RepeatabilityInputError as error:
        raise UsageFailure(str(error)) from None
    models, settings, config = _models_and_settings(bundle, demo, store, steps, adapt_steps, device, True)
    try:
        repository = None if no_store else open_repository(config, migrate=True)
    except SQLAlchemyError as error:
        raise UsageFailure(f"The database {redact_url(config.effective_database_url)} cannot be opened to store the "
                           f"study ({str(error).splitlines()[0]}); fix it or use --no-store.") from None
    try:
        per_photo = repeats * (settings.inversion.steps + settings.adaptation.steps)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            photo_task = bar.add_task("photos", total=len(photos))
            step_task = bar.add_task(photos[0].name, total=per_photo)

            def photo_done(index: int, outcome) -> None:
                status = "scored" if outcome.ok else f"refused ({outcome.reason})"
                bar.console.print(f"[{index}/{len(photos)}] {outcome.file}: {status}", markup=False, highlight=False,
                                  soft_wrap=True)
                bar.update(photo_task, completed=index)
                if index < len(photos):
                    bar.reset(step_task, total=per_photo, description=photos[index].name)

            try:
                run = run_repeatability(photos, models, settings, repeats, ignored_files=ignored,
                                        progress=lambda _step: bar.advance(step_task), on_photo=photo_done)
            except RepeatabilityInputError as error:
                raise UsageFailure(str(error)) from None
            except KeyboardInterrupt:
                raise UsageFailure("Interrupted; nothing was written or stored.") from None
        created, version = utc_now(), software_version()
        try:
            with staged_output_dir(out) as staging:
                study_id = None if repository is None else repository.save_repeatability(
                    study_record(run, created_at=created, tool_version=version))
                record = summary_record(run, created_at=created, tool_version=version, stored_as=study_id)
                write_outputs(staging, run, record)
        except SQLAlchemyError as error:
            raise UsageFailure(f"The study could not be stored ({str(error).splitlines()[0]}); nothing was written. "
                               "Run again, or with --no-store.") from None
    finally:
        if repository is not None:
            repository.close()
    primary = run.spreads.get(PRIMARY_VARIANT)
    figures = "" if primary is None else (
        f"; primary variant within-photo SD {primary.within_sd:.4g}, repeatability coefficient {primary.rc:.4g} "
        f"[{primary.rc_low:.4g}, {primary.rc_high:.4g}]")
    stored = (f"; stored as study {study_id} for model {run.model.identity[:12]}" if study_id is not None
              else "; not stored (--no-store)")
    label = run.model.label
    typer.echo(f"{len(run.scored)} photos × {repeats} repeats ({len(run.refused)} refused and excluded){figures}"
               f"{stored} → {out}" + (f"  [{label}]" if label else ""))


def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    faces: Annotated[int, typer.Option("--faces", help="Number of generated faces N.")] = 8,
    levels: Annotated[int, typer.Option("--levels", help="Severity levels K (0 = none … K = complete).")] = 5,
    bundle: BundleOption = None,
    demo: DemoOption = False,
    steps: StepsOption = None,
    adapt_steps: AdaptOption = None,
    device: DeviceOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated faces.")] = 0,
    psi: Annotated[float, typer.Option("--psi", help="Truncation psi of the generated faces.")] = 0.7,
    side: Annotated[str, typer.Option("--side", help="Side of the notch, the subject's: right or left.")] = "right",
    store: StoreOption = None,
) -> None:
    """Implant a cleft-like notch at graded severities into generated faces; check score and heatmap respond.

    Writes OUT/simulation.csv (every score), localisation.csv, summary.json,
    summary.md and plots/score_vs_severity.png, plots/localisation.png.
    """
    from pipeline.evaluation.defects import CleftSide
    from service.cli.errors import UsageFailure
    from service.outputs import staged_output_dir, write_json
    from service.research import simulate as sim
    from service.research.evaluate import write_csv

    if side not in {item.value for item in CleftSide}:
        raise UsageFailure(f"--side must be right or left (the subject's), got {side!r}.")
    try:
        settings = sim.SimulationSettings(faces=faces, levels=levels, seed=seed, psi=psi, side=CleftSide(side))
    except (TypeError, ValueError) as error:
        raise UsageFailure(f"Invalid simulation settings: {error}.") from None
    models, appraisal, _ = _models_and_settings(bundle, demo, store, steps, adapt_steps, device, True)

    def announce(face: int, level: int, done: int) -> None:
        typer.echo(f"[{done}/{faces * (levels + 1)}] face {face}, level {level}")

    generated, cases = sim.run_simulation(models, appraisal, settings, on_case=announce)
    summary = sim.json_safe(sim.summarise(generated, cases, models, appraisal, settings))
    with staged_output_dir(out) as staging:
        write_csv(staging / "simulation.csv", sim.score_rows(generated, cases),
                  ("face", "landmarks", "level", "severity", "method", "processing", "region", "adaptation",
                   "erosion_order", "score"))
        write_csv(staging / "localisation.csv", sim.localisation_rows(cases),
                  ("face", "level", "severity", "primary_score", "region_px", "region_in_mask_px", "mask_px", "peak_x",
                   "peak_y", "peak_inside", "iou", "chance_peak_inside", "chance_iou"))
        write_json(staging / "summary.json", summary)
        (staging / "summary.md").write_text(sim.summary_markdown(summary), encoding="utf-8")
        sim.write_plots(staging / "plots", generated, cases, models.identity.label)
    rho, loc = summary["spearman_severity_vs_minus_score"], summary["localisation"]
    typer.echo(f"pooled ρ(severity, −S) = {_fmt(rho['pooled'])}, peak inside {_fmt(loc['peak_inside_share'])}, "
               f"mean IoU {_fmt(loc['mean_iou'])} → {out}" + (f"  [{models.identity.label}]" if models.identity.label else ""))


# --- presentation of the evaluation ------------------------------------------------------------------------------

#: The paper's Fig. 11 variants (mouth/nose; erosion in the journal order), for the scatter plots.
MAIN_VARIANTS: tuple[ScoreVariant, ...] = (
    replace(PRIMARY_VARIANT, processing=Processing.BASE, erosion_order=None), PRIMARY_VARIANT,
    replace(PRIMARY_VARIANT, processing=Processing.BASE, erosion_order=None, adaptation=False),
    replace(PRIMARY_VARIANT, adaptation=False),
    replace(PRIMARY_VARIANT, method=HeatmapMethod.LPIPS),
    replace(PRIMARY_VARIANT, method=HeatmapMethod.SSIM),
)


def variant_label(key: ScoreVariant) -> str:
    text = f"{key.method.upper()} {key.processing} {key.region} {'with' if key.adaptation else 'without'} adaptation"
    return text + (f" ({key.erosion_order})" if key.erosion_order else "")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table1_markdown(rows: Sequence["Table1Row"], header_lines: Sequence[str]) -> str:
    lines = [*header_lines, "",
             "| method | processing | region | adaptation | erosion order | n | Pearson r | 95 % CI | Spearman ρ "
             "| paper r | RC |",
             "|---|---|---|---|---|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        key, s = row.key, row.summary
        paper = "" if row.paper_r100 is None else f"{row.paper_r100 / 100:.3f}"
        rc = "—" if row.repeatability is None else f"{row.repeatability.rc:.3g}"
        lines.append(f"| {key.method.upper()} | {key.processing} | {key.region} | "
                     f"{'with' if key.adaptation else 'without'} | {key.erosion_order or '—'} "
                     f"| {s.n} | {_fmt(s.pearson_r)} | [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] | {_fmt(s.spearman_rho)} "
                     f"| {paper} | {rc} |")
    return "\n".join(lines) + "\n"


def report_header(run: "EvaluationRun") -> list[str]:
    """The lines above Table 1 in table1.md (the non-clinical label first when it applies)."""
    lines = []
    if run.model.non_clinical:
        lines += [f"**{run.model.label}** — made with a non-clinical model bundle; these numbers say nothing about "
                  "the method's clinical validity.", ""]
    inv, ada = run.settings.inversion, run.settings.adaptation
    lines += [
        "# Table 1 — machine scores against mean human ratings", "",
        f"- Photos: {len(run.outcomes)} listed, {run.scored} scored, {len(run.refused)} refused by the method "
        "(listed in failures.csv and excluded from the statistics).",
        f"- Model bundle: {run.model.name} (identity {run.model.identity[:12]}); inversion {inv.steps} steps, "
        f"adaptation {ada.steps} steps, device {run.settings.device}.",
        f"- Pearson r with a percentile-bootstrap 95 % interval ({run.bootstrap} resamples of the photos, seed "
        f"{run.seed}, the same resamples for every variant); Spearman ρ with average ranks for ties.",
        "- The score S rises as a face gets closer to normal and the rating runs from 1 (most abnormal) to 7 "
        "(almost normal), so a working variant correlates positively.",
        "- paper r: Hayajneh et al., Table 1 (13 photos, 80 raters); given for mouth/nose with adaptation and, "
        "without adaptation, for PSE +both only. The paper does not tie its numbers to an erosion order (the arXiv "
        "text erodes before differencing, the journal after), so they are printed beside both orders.",
    ]
    study = run.repeatability
    if study is not None:
        lines.append(f"- RC: each variant's repeatability coefficient (2.77 × within-photo SD: two appraisals of one "
                     f"photo differ by less in 95 % of cases) from the repeatability study stored for this model "
                     f"({study.photos} photos × {study.repeats} repeats, {study.created_at:%Y-%m-%d}"
                     + (", non-clinical" if study.non_clinical else "") + "). A useful variant correlates with the "
                     "ratings and has an RC small against the spread of scores between photos."
                     + (f" Note: {run.repeatability_note}." if run.repeatability_note else ""))
    else:
        lines.append(f"- RC (repeatability coefficient): {run.repeatability_note}.")
    if run.agreement is not None:
        a = run.agreement
        lines.append(f"- Inter-rater agreement ({a.raters} raters, {a.photos} photos, {a.complete_photos} rated by all): "
                     f"mean pairwise Pearson r {_fmt(a.mean_pairwise_pearson)}, ICC(2,1) {_fmt(a.icc_2_1)}, "
                     f"ICC(2,k) {_fmt(a.icc_2_k)} (two-way random, absolute agreement; Shrout & Fleiss 1979).")
    elif run.table.rater_names:
        lines.append("- One rater column only: no inter-rater agreement to report.")
    return lines


def scatter_plots(folder: Path, outcomes: Sequence["PhotoOutcome"], rows: Sequence["Table1Row"], label: str) -> list[Path]:
    """plots/<variant>.png per main variant (human rating vs score) and plots/fig11.png with all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from service.research.evaluate import series

    ratings, scores = series(outcomes)
    summaries = {row.key: row.summary for row in rows}
    keys = [key for key in MAIN_VARIANTS if key in scores]
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def draw(axis, key: ScoreVariant) -> None:
        s = summaries[key]
        axis.scatter(ratings, scores[key], s=18, color="tab:blue")
        axis.set_xlabel("mean human rating (1 = most abnormal, 7 = almost normal)")
        axis.set_ylabel("machine score S")
        axis.set_title(f"{variant_label(key)}\nr = {_fmt(s.pearson_r)} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}], "
                       f"ρ = {_fmt(s.spearman_rho)}, n = {s.n}" + (f"\n{label}" if label else ""), fontsize=8)

    for key in keys:
        figure, axis = plt.subplots(figsize=(5, 4.2))
        draw(axis, key)
        figure.tight_layout()
        name = f"{key.method}_{key.processing}_{key.region}_{'adapted' if key.adaptation else 'not_adapted'}"
        path = folder / (name + (f"_{key.erosion_order}" if key.erosion_order else "") + ".png").replace("+", "_")
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    if keys:
        figure, axes = plt.subplots(2, 3, figsize=(15, 8.4))
        for axis, key in zip(axes.ravel(), keys):
            draw(axis, key)
        for axis in axes.ravel()[len(keys):]:
            axis.set_visible(False)
        figure.suptitle("Human rating vs machine score (paper Fig. 11)" + (f" — {label}" if label else ""))
        figure.tight_layout()
        figure.savefig(folder / "fig11.png", dpi=90)
        plt.close(figure)
        written.append(folder / "fig11.png")
    return written


def gallery(outcomes: Sequence["PhotoOutcome"], label: str, tile: int = 128, columns: int = 4) -> np.ndarray:
    """Grid image, per scored photo: aligned face, normalised face, primary heatmap over the face
    (mouth/nose mask; colour scale per photo). uint8 RGB."""
    import cv2
    from PIL import Image

    from pipeline.compare.render import overlay_heatmap

    def read(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB") if image.mode != "L" else image)

    def fit(image: np.ndarray) -> np.ndarray:
        method = cv2.INTER_AREA if image.shape[0] > tile else cv2.INTER_NEAREST
        return cv2.resize(image, (tile, tile), interpolation=method)

    caption, banner = 18, 26
    cells = []
    for outcome in (o for o in outcomes if o.ok):
        aligned = read(outcome.folder / "aligned.png")
        mask = read(outcome.folder / "masks" / f"{PRIMARY_VARIANT.region}.png") > 0
        heat = np.load(outcome.folder / "primary_heatmap.npy", allow_pickle=False).astype(np.float64)
        tiles = [aligned, read(outcome.folder / "normalized.png"), overlay_heatmap(aligned, heat, 0.7, mask)]
        cell = np.full((tile + caption, 3 * tile, 3), 255, np.uint8)
        cell[caption:] = np.concatenate([fit(t) for t in tiles], axis=1)
        text = f"{outcome.file[:28]}  rating {outcome.rating:.2f}".encode("ascii", "replace").decode()
        cv2.putText(cell, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    columns = max(1, min(columns, len(cells)))
    rows = max(1, math.ceil(len(cells) / columns))
    height, width = tile + caption, 3 * tile
    canvas = np.full((banner + rows * height, columns * width, 3), 255, np.uint8)
    title = "aligned | normalised | primary heatmap (PSE YCbCr+erosion, mouth/nose)"
    if label:
        title = ascii_text(label) + "  " + title
    cv2.putText(canvas, title.encode("ascii", "replace").decode(), (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (180, 0, 0) if label else (0, 0, 0), 1, cv2.LINE_AA)
    for index, cell in enumerate(cells):
        top, left = banner + (index // columns) * height, (index % columns) * width
        canvas[top:top + height, left:left + width] = cell
    return canvas
