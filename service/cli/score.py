"""``cleftscore score``: the whole method on one photo file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.vocabulary import PRIMARY_VARIANT
from service.cli.options import (
    AdaptOption,
    BundleOption,
    DemoOption,
    DeviceOption,
    StepsOption,
    StoreOption,
    appraisal_config,
)
from service.outputs import staged_output_dir, write_json, write_png


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)


def score_command(
    photo: Annotated[Path, typer.Argument(help="Photo file (JPEG, PNG or TIFF).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (written only on success).")],
    bundle: BundleOption = None,
    demo: DemoOption = False,
    steps: StepsOption = None,
    adapt_steps: AdaptOption = None,
    device: DeviceOption = None,
    lpips_heatmaps: Annotated[bool, typer.Option("--lpips-heatmaps/--no-lpips-heatmaps", help="Also score LPIPS maps.")] = True,
    store: StoreOption = None,
) -> None:
    """Align the face, find its closest normal face (inversion + adaptation), and score every variant.

    Writes OUT/aligned.png, inverted.png (without adaptation), normalized.png (with
    adaptation), heatmaps/*.png, overlay.png (the primary heatmap on the photo) and
    scores.json (all scores, timings and the model identity).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.appraise import appraise, scores_record
    from pipeline.compare.annotate import heatmap_on_photo
    from pipeline.compare.render import heatmap_to_rgb
    from pipeline.preprocess.photo_io import load_photo
    from service.config.appraisal import settings_from
    from service.runtime.model_store import open_bundle

    config = appraisal_config(bundle=bundle, demo=demo, steps=steps, adapt_steps=adapt_steps, device=device)
    settings = settings_from(config, lpips_heatmaps=lpips_heatmaps)
    models = open_bundle(store or config.models_dir, config.bundle, demo=config.demo, device=settings.device)
    image = load_photo(photo)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(step) -> None:
            if step.stage not in tasks:
                tasks[step.stage] = bar.add_task(step.stage, total=step.total, loss=step.loss)
            bar.update(tasks[step.stage], completed=step.step, loss=step.loss)

        result = appraise(image, models, settings, progress=report)
    pre = result.preprocessing
    with staged_output_dir(out) as staging:
        write_png(staging / "aligned.png", result.aligned)
        write_png(staging / "inverted.png", result.inverted)
        write_png(staging / "normalized.png", result.normalized)
        for key, heat in result.heatmaps.items():
            write_png(staging / "heatmaps" / (key.replace("/", "__").replace("+", "_") + ".png"), heatmap_to_rgb(heat))
        write_png(staging / "overlay.png",
                  heatmap_on_photo(image, result.primary_heatmap, pre.masks[PRIMARY_VARIANT.region], pre.transform))
        write_json(staging / "landmarks.json", pre.landmarks_json())
        write_json(staging / "scores.json", scores_record(result))
    label = f"  [{result.model.label}]" if result.model.non_clinical else ""
    typer.echo(f"{photo.name}: primary score {result.primary_score:.3f} (PSE, YCbCr+erosion, mouth/nose) "
               f"in {result.timings['total']:.1f} s → {out}{label}")
