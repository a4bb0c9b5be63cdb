"""Pin the paper-mode (and fast-mode) scores of the method, so a refactor can show it changed nothing.

Run from the repository root: ``.venv/bin/python -m tests.pin_scores tests/data/pinned_scores.json``.
History of tests/data/pinned_scores.json (each written by this script on the 2-core x86-64
CI machine, one torch thread):

* first at commit 18ee6b6, before the layout and one-loop refactor of issue "1/7". The
  refactored code reproduced it (paper mode and the fixture case bit for bit; fast mode within
  1.2e-3, because FAST had run the old batch engine's forms), shown by
  tests/pipeline/test_pinned_scores.py at the merge of that work;
* again after the alignment of issue "3/7" started to follow the FFHQ recipe: every aligned
  image, and so every demo score, changed (paper-mode primary score obama −0.5261 → −0.5235,
  biden −0.7379 → −0.6617); the fixture case, which does not align, did not.

tests/pipeline/test_pinned_scores.py compares today's code with the file.

Cases: the deterministic demo bundle at 64² (seed 0) on two real photos, in paper and
fast mode, both erosion orders; and the shared StyleGAN2-ADA fixture (32²) with LPIPS on a
random AlexNet backbone, inverting and adapting a generated face.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.appraise import AppraisalSettings, appraise
from pipeline.compare.heatmaps import ErosionOrder
from pipeline.models.bundle import load_bundle
from pipeline.models.stylegan2 import load_generator
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert
from pipeline.normalize.perceptual import load_lpips
from pipeline.normalize.schedules import NormalizationMode
from pipeline.preprocess.photo_io import load_photo
from service.runtime.model_store import make_demo_bundle
from tests.conftest import shared_dir

SHARED = shared_dir()
PHOTOS = ("obama.jpg", "biden.jpg")


def demo_cases(store: Path) -> dict:
    bundle = load_bundle(make_demo_bundle(store, resolution=64))
    out = {"bundle_identity": bundle.identity.identity}
    for mode in (NormalizationMode.PAPER, NormalizationMode.FAST):
        settings = AppraisalSettings(inversion=InversionSettings(steps=20, w_avg_samples=500),
                                     adaptation=AdaptationSettings(steps=5),
                                     erosion_orders=(ErosionOrder.DIFF_THEN_ERODE, ErosionOrder.ERODE_THEN_DIFF),
                                     mode=mode)
        for name in PHOTOS:
            result = appraise(load_photo(SHARED / "faces" / name), bundle, settings)
            out[f"{mode.value}/{name}"] = {
                "scores": [s.to_dict() for s in result.scores],
                "primary": result.primary_score,
                "inversion_losses": list(result.inversion_losses),
                "adaptation_losses": list(result.adaptation_losses),
                "normalized_mean": float(result.normalized.astype(np.float64).mean()),
            }
    return out


def fixture_case() -> dict:
    G = load_generator(SHARED / "fixtures" / "stylegan2-ada" / "sg2ada_tiny32.pkl")
    lpips_model = load_lpips("alex", allow_random_backbone=True)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim)).float()
        target = G(z, noise="const").clamp(-1, 1)
    settings = InversionSettings(steps=40, w_avg_samples=1000)
    stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed)
    (inversion,) = invert(G, target, lpips_model, settings, w_stats=stats, device="cpu")
    (adaptation,) = adapt(G, target, inversion.w, inversion.noise, lpips_model, AdaptationSettings(steps=10),
                          device="cpu")
    return {
        "w_std": stats.w_std,
        "inversion_losses": [s.total for s in inversion.losses],
        "inverted_image_sum": float(inversion.image.double().sum()),
        "adaptation_losses": [s.total for s in adaptation.losses],
        "adaptation_final_loss": adaptation.final_loss.total,
        "adapted_image_sum": float(adaptation.image.double().sum()),
    }


def _revision() -> str:
    """The checkout's commit (``-dirty`` when files differ from it)."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or "an unknown revision"


def main(path: str) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as store:
        record = {"demo_64": demo_cases(Path(store)), "sg2ada_tiny32": fixture_case(),
                  "produced_by": f"python -m tests.pin_scores at {_revision()}, torch {torch.__version__}, 1 thread"}
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
