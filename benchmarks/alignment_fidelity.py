"""How closely our face alignment follows FFHQ's recipe, and what it costs in time and memory.

    .venv/bin/python -m benchmarks.alignment_fidelity [--sizes 1024 256 64] [--scales 0.8 1.6 2.5 4.0]
        [--photos obama biden two_people astronaut grace_hopper] [--baseline REV] [--memory]

Each real photo (../shared/faces, skimage's astronaut, matplotlib's grace_hopper.jpg) is rescaled so
the face's quad is ``scale × S`` pixels (tests/pipeline/preprocess/ffhq_recipe.face_at_scale) and
aligned to S² by today's ``align_face``, by FFHQ's recipe as written in the test oracle
(tests/pipeline/preprocess/ffhq_recipe.py, transform size 4096) and, with ``--baseline``, by the
``align_face`` of that git revision. Landmarks are detected once per photo and shared by all three.
Per case: mean squared difference to the recipe in the aligned image's central half (8-bit²) and the
Laplacian energy there (mean squared 4-neighbour Laplacian, all channels) over the recipe's.

``--memory`` also measures, each in a fresh process, the peak memory of aligning synthetic 50 MP
photos at 1024² (ours, the baseline's and the recipe oracle's): the growth of the peak resident set
over the resident set before the call (Linux), and the peak of numpy's allocations (tracemalloc).
Prints tables and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from pipeline.preprocess import align
from pipeline.preprocess.faces import FaceModels, detect_face
from pipeline.preprocess.photo_io import load_photo
from tests.pipeline.preprocess.ffhq_recipe import (
    central_mse,
    face_at_scale,
    laplacian_energy,
    recipe_align,
    recipe_quad,
)

ROOT = Path(__file__).resolve().parent.parent
THIS_CHECKOUT = "this checkout"
PHOTOS = ("obama", "biden", "two_people", "astronaut", "grace_hopper")


def load_align_at(revision: str) -> ModuleType:
    """``pipeline/preprocess/align.py`` as it was at a git revision of this repository, as a module."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:pipeline/preprocess/align.py"],
                            check=True, capture_output=True, text=True).stdout
    module = ModuleType(f"align_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:pipeline/preprocess/align.py", "exec"), module.__dict__)
    return module


def load_sample(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if name == "grace_hopper":
        import matplotlib

        return load_photo(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    shared = Path(os.environ.get("CLEFTSCORE_SHARED", ROOT.parent / "shared"))
    return load_photo(shared / "faces" / f"{name}.jpg")


def timed(function, *args) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def fidelity_rows(photos: list[str], sizes: list[int], scales: list[float], baseline: ModuleType | None) -> list[dict]:
    models = FaceModels()
    rows = []
    for name in photos:
        photo = load_sample(name)
        landmarks = detect_face(photo, models).landmarks
        for size in sizes:
            for scale in scales:
                scaled, points = face_at_scale(photo, landmarks, scale, size)
                reference, recipe_s = timed(recipe_align, scaled, points, size)
                (ours, _), ours_s = timed(align.align_face, scaled, points, size)
                row = {
                    "photo": name, "output_size": size, "quad_over_output": scale,
                    "photo_size": [int(scaled.shape[1]), int(scaled.shape[0])],
                    "shrink": max(int(np.floor(recipe_quad(points)[1] / size * 0.5)), 1),  # 1: none
                    "mse_central": round(central_mse(ours, reference), 3),
                    "laplacian_ratio": round(laplacian_energy(ours) / laplacian_energy(reference), 3),
                    "seconds": round(ours_s, 3), "recipe_seconds": round(recipe_s, 3),
                }
                if baseline is not None:
                    (before, _), before_s = timed(baseline.align_face, scaled, points, size)
                    ratio = laplacian_energy(before) / laplacian_energy(reference)
                    row |= {"baseline_mse_central": round(central_mse(before, reference), 3),
                            "baseline_laplacian_ratio": round(ratio, 3), "baseline_seconds": round(before_s, 3)}
                rows.append(row)
                print_row(row, baseline is not None)
    return rows


def print_row(row: dict, with_baseline: bool) -> None:
    text = (f"{row['photo']:>12} {row['output_size']:5d} {row['quad_over_output']:5.2f}× "
            f"{row['photo_size'][0]:5d}×{row['photo_size'][1]:<5d} shrink {row['shrink']}  "
            f"MSE {row['mse_central']:7.3f}  Lap {row['laplacian_ratio']:5.3f}  {row['seconds']:6.2f} s")
    if with_baseline:
        text += (f" | before: MSE {row['baseline_mse_central']:7.3f}  Lap {row['baseline_laplacian_ratio']:5.3f}  "
                 f"{row['baseline_seconds']:6.2f} s")
    print(text + f" | recipe {row['recipe_seconds']:6.2f} s", flush=True)


def upscaled(photo: np.ndarray, factor: float) -> np.ndarray:
    size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    return cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)


def memory_cases(directory: Path) -> dict[str, tuple[Path, Path]]:
    """Synthetic 50 MP photos made from obama.jpg, saved as .npy for the probes: the whole photo
    upscaled (quad 2.8×1024, inside the photo), and a 7072² cut of a 9.6× upscale whose quad
    (3.9×1024, the largest that is not shrunk) leaves the top by 20 % of its side, so the recipe pads
    (the worst case: the padded image is about 1.8 quad sides across)."""
    photo = load_sample("obama")
    landmarks = detect_face(photo, FaceModels()).landmarks
    cases = {}
    factor = np.sqrt(50e6 / (photo.shape[0] * photo.shape[1]))
    big = upscaled(photo, factor)
    cases["50 MP, quad 2.8x, no padding"] = (big, (landmarks + 0.5) * factor - 0.5)
    del big
    factor = 3.9 * 1024 / recipe_quad(landmarks)[1]
    big = upscaled(photo, factor)
    points = (landmarks + 0.5) * factor - 0.5
    quad, qsize = recipe_quad(points)
    side = 7072
    x0 = int(np.clip(quad[:, 0].mean() - side / 2, 0, big.shape[1] - side))
    y0 = int(quad[:, 1].min() + 0.2 * qsize)
    cut = np.ascontiguousarray(big[y0 : y0 + side, x0 : x0 + side])
    cases["50 MP, quad 3.9x, padded"] = (cut, points - [x0, y0])
    paths = {}
    for index, (label, (image, points)) in enumerate(cases.items()):
        paths[label] = (directory / f"photo{index}.npy", directory / f"points{index}.npy")
        np.save(paths[label][0], image)
        np.save(paths[label][1], points)
    return paths


def probe_memory(photo_path: str, points_path: str, size: int, code: str) -> dict:
    """In this (fresh) process: the peak memory of one ``align_face`` call beyond the loaded photo.

    Linux's peak resident set (VmHWM) is reset just before the call by writing 5 to /proc/self/clear_refs.
    """
    if code == "recipe":
        function = recipe_align
    else:
        function = (align if code == THIS_CHECKOUT else load_align_at(code)).align_face
    image, points = np.load(photo_path), np.load(points_path)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    function(image, points, size)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    peak = status_kib("VmHWM")
    return {"photo_mb": round(image.nbytes / 2**20), "rss_growth_mb": round((peak - before) / 1024),
            "numpy_peak_mb": round(traced_peak / 2**20), "seconds": round(seconds, 2)}


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_rows(size: int, baseline: str | None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for label, (photo_path, points_path) in memory_cases(Path(directory)).items():
            for code in [THIS_CHECKOUT] + ([baseline] if baseline else []) + ["recipe"]:
                command = [sys.executable, "-m", "benchmarks.alignment_fidelity", "--probe", str(photo_path),
                           str(points_path), str(size), code]
                result = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
                row = {"case": label, "code": code, "output_size": size}
                row |= json.loads(result.stdout)
                rows.append(row)
                print(f"{label:>28} {row['code']:>14}: photo {row['photo_mb']} MB, peak RSS growth "
                      f"{row['rss_growth_mb']} MB, numpy peak {row['numpy_peak_mb']} MB, {row['seconds']} s",
                      flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 256, 64])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.8, 1.6, 2.5, 4.0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--baseline", help="git revision whose align_face is measured too")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory on 50 MP photos at 1024²")
    parser.add_argument("--probe", nargs=4, metavar=("PHOTO_NPY", "POINTS_NPY", "SIZE", "CODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe_memory(args.probe[0], args.probe[1], int(args.probe[2]), args.probe[3])))
        return

    baseline = load_align_at(args.baseline) if args.baseline else None
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              check=True, capture_output=True, text=True).stdout.strip()
    rows = fidelity_rows(args.photos, args.sizes, args.scales, baseline)
    record = {
        "benchmark": "alignment_fidelity", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": "python -m benchmarks.alignment_fidelity " + " ".join(sys.argv[1:]),
        "code_revision": revision, "baseline_revision": args.baseline, "results": rows,
    }
    if args.memory:
        record["memory"] = memory_rows(1024, args.baseline)
    keys = ["mse_central", "laplacian_ratio"]
    for key in keys + ["baseline_" + key for key in keys if baseline is not None]:
        values = [row[key] for row in rows]
        print(f"{key}: {min(values)} – {max(values)}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"alignment-fidelity-{stamp}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"→ {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
