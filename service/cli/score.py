"""``cleftscore score``: the whole method on one photo file."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from pipeline.vocabulary import PRIMARY_VARIANT
from service.outputs import staged_output_dir, write_json, write_png


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter("CUDA was asked for but no CUDA device is available", param_hint="--device")
    return device


def score_command(
    photo: Annotated[Path, typer.Argument(help="Photo file (JPEG, PNG or TIFF).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (written only on success).")],
    bundle: Annotated[str | None, typer.Option("--bundle", help="Installed model bundle (default: $CLEFTSCORE_BUNDLE).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Use the demo bundle (made if missing); outputs are labelled non-clinical.")] = False,
    steps: Annotated[int | None, typer.Option("--steps", help="Inversion steps (paper: 2000).")] = None,
    adapt_steps: Annotated[int | None, typer.Option("--adapt-steps", help="Adaptation steps (paper: 50).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto.")] = None,
    lpips_heatmaps: Annotated[bool, typer.Option("--lpips-heatmaps/--no-lpips-heatmaps", help="Also score LPIPS maps.")] = True,
    store: Annotated[Path | None, typer.Option("--store", help="Model store (default: $CLEFTSCORE_DATA_DIR/models).")] = None,
) -> None:
    """Align the face, find its closest normal face (inversion + adaptation), and score every variant.

    Writes OUT/aligned.png, inverted.png (without adaptation), normalized.png (with
    adaptation), heatmaps/*.png, overlay.png (the primary heatmap on the photo) and
    scores.json (all scores, timings and the model identity).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.appraise import AppraisalSettings, appraise, scores_record
    from pipeline.compare.annotate import heatmap_on_photo
    from pipeline.compare.render import heatmap_to_rgb
    from pipeline.models.bundle import load_bundle
    from pipeline.normalize.adaptation import AdaptationSettings
    from pipeline.normalize.inversion import InversionSettings
    from pipeline.preprocess.photo_io import load_photo
    from service.config.settings import load_config
    from service.runtime.model_store import DEMO_BUNDLE, bundle_path, make_demo_bundle

    config = load_config(os.environ)
    root = store or config.models_dir
    name = DEMO_BUNDLE if demo else (bundle or config.bundle)
    if demo and not (root / DEMO_BUNDLE / "manifest.json").is_file():
        make_demo_bundle(root)
    models = load_bundle(bundle_path(root, name), device=resolve_device(device or config.device))
    settings = AppraisalSettings(
        inversion=InversionSettings(steps=steps if steps is not None else config.inversion_steps),
        adaptation=AdaptationSettings(steps=adapt_steps if adapt_steps is not None else config.adaptation_steps),
        lpips_heatmaps=lpips_heatmaps,
        device=resolve_device(device or config.device),
    )
    image = load_photo(photo)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(step) -> None:
            if step.stage not in tasks:
                tasks[step.stage] = bar.add_task(step.stage, total=step.total, loss=step.loss)
            bar.update(tasks[step.stage], completed=step.step, loss=step.loss)

        result = appraise(image, models, replace(settings), progress=report)
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
