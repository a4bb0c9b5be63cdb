"""``cleftscore preprocess`` and ``cleftscore heatmap``: the method's steps on files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pipeline.vocabulary import ErosionOrder
from service.outputs import staged_output_dir, write_json, write_png


def register(app: typer.Typer) -> None:
    app.command("preprocess")(preprocess_command)
    app.command("heatmap")(heatmap_command)


def preprocess_command(
    photo: Annotated[Path, typer.Argument(help="Photo file (JPEG, PNG or TIFF).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; files are written only on success).")],
    size: Annotated[int, typer.Option("--size", help="Aligned image size N (the generator's resolution).")] = 1024,
    detector: Annotated[str, typer.Option("--detector", help="Face detector: hog (default) or cnn (dlib MMOD).")] = "hog",
    threshold: Annotated[float | None, typer.Option("--threshold", help="Minimum detection score.")] = None,
    max_yaw: Annotated[float, typer.Option("--max-yaw", help="Largest accepted |yaw| in degrees.")] = 20.0,
    max_pitch: Annotated[float, typer.Option("--max-pitch", help="Largest accepted |pitch| in degrees.")] = 20.0,
) -> None:
    """Detect the face, fit 68 landmarks, check the pose, align it FFHQ-style and derive the region masks.

    Writes OUT/aligned.png, OUT/landmarks.json, OUT/masks/mouth_nose.png,
    OUT/masks/face_without_eyes.png and OUT/overlay.png.
    """
    from pipeline.compare.annotate import draw_landmarks_and_regions
    from pipeline.preprocess.faces import FaceModels
    from pipeline.preprocess.photo_io import load_photo
    from pipeline.preprocess.steps import preprocess

    settings = preprocess_settings(size, detector, threshold, max_yaw, max_pitch)
    image = load_photo(photo)
    result = preprocess(image, FaceModels(), settings)
    overlay = draw_landmarks_and_regions(image, result.landmarks_original, result.masks, result.transform)
    with staged_output_dir(out) as staging:
        write_png(staging / "aligned.png", result.aligned)
        write_json(staging / "landmarks.json", result.landmarks_json())
        for name, mask in result.masks.items():
            write_png(staging / "masks" / f"{name}.png", mask)
        write_png(staging / "overlay.png", overlay)
    pose = result.pose
    typer.echo(
        f"{photo.name}: {result.faces_found} face(s), score {result.detector_score:.2f}, "
        f"yaw {pose.yaw:+.1f}° pitch {pose.pitch:+.1f}° roll {pose.roll:+.1f}° → {out}"
    )


def preprocess_settings(size: int, detector: str, threshold: float | None, max_yaw: float, max_pitch: float):
    from pipeline.preprocess.faces import DetectionSettings, DetectorKind
    from pipeline.preprocess.pose import PoseLimits
    from pipeline.preprocess.steps import PreprocessSettings

    try:
        kind = DetectorKind(detector)
    except ValueError:
        raise typer.BadParameter(f"unknown detector {detector!r}; use hog or cnn", param_hint="--detector") from None
    detection = DetectionSettings(detector=kind) if threshold is None else DetectionSettings(detector=kind, threshold=threshold)
    return PreprocessSettings(output_size=size, detection=detection, pose_limits=PoseLimits(max_yaw=max_yaw, max_pitch=max_pitch))


def heatmap_command(
    aligned: Annotated[Path, typer.Argument(help="Aligned original (aligned.png from preprocess).")],
    normalized: Annotated[Path, typer.Argument(help="Its normalised counterpart, same size.")],
    landmarks: Annotated[Path, typer.Option("--landmarks", help="landmarks.json from preprocess.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for scores.json and heatmap PNGs.")],
    lpips_weights: Annotated[Path | None, typer.Option("--lpips-weights", help="torchvision ImageNet backbone file for LPIPS maps.")] = None,
    lpips_net: Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: vgg or alex.")] = "vgg",
    both_erosion_orders: Annotated[bool, typer.Option("--both-erosion-orders", help="Also score the arXiv order (erode, then difference).")] = False,
    adapted: Annotated[bool, typer.Option("--adapted/--not-adapted", help="Whether NORMALIZED comes from model adaptation (normalized.png of `cleftscore score`) or from the inversion alone (inverted.png); names the variants.")] = True,
) -> None:
    """Score every Table 1 variant (heatmap × processing × region) for an aligned photo and its normalised face.

    LPIPS variants need the LPIPS backbone weights (--lpips-weights); without them
    only PSE and SSIM variants are computed, and scores.json says so.
    """
    from pipeline.compare.render import heatmap_to_rgb
    from pipeline.compare.scoring import score_all_variants
    from pipeline.preprocess.masks import region_masks
    from pipeline.preprocess.photo_io import load_photo

    original = load_photo(aligned)
    counterpart = load_photo(normalized)
    if original.shape != counterpart.shape or original.shape[0] != original.shape[1]:
        raise typer.BadParameter(
            f"the images must be square and of one size, got {original.shape[:2]} and {counterpart.shape[:2]}"
        )
    record = json.loads(Path(landmarks).read_text(encoding="utf-8"))
    masks = region_masks(np.asarray(record["aligned"], dtype=np.float64), original.shape[0])
    lpips_model = None
    if lpips_weights is not None:
        from pipeline.normalize.perceptual import load_lpips

        lpips_model = load_lpips(lpips_net, lpips_weights, spatial=True)
    orders = (ErosionOrder.DIFF_THEN_ERODE, ErosionOrder.ERODE_THEN_DIFF) if both_erosion_orders else (ErosionOrder.DIFF_THEN_ERODE,)
    scores, maps = score_all_variants(original, counterpart, masks, adaptation=adapted, lpips_model=lpips_model,
                                      erosion_orders=orders)
    with staged_output_dir(out) as staging:
        write_json(staging / "scores.json", {
            "lpips": "computed" if lpips_model is not None else "skipped: no --lpips-weights given",
            "scores": [s.to_dict() for s in scores],
        })
        for key, heat in maps.items():
            write_png(staging / "heatmaps" / (key.replace("/", "__").replace("+", "_") + ".png"), heatmap_to_rgb(heat))
    typer.echo(f"{len(scores)} scores → {out / 'scores.json'}")
