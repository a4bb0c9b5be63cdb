"""Preprocessing time per photo by photo size, on this machine's CPU.

    .venv/bin/python -m benchmarks.preprocess [--sizes 1 4 12 24 50] [--repeats 3] [--out-size 1024] [--baseline REV]

A real face photo (../shared/faces/obama.jpg, else matplotlib's grace_hopper.jpg)
is upscaled to each size and saved as a JPEG (quality 92); each repeat times decoding
that file plus detection, landmarks, pose, alignment and masks, and then the alignment
alone (``align_face`` on the decoded photo and its landmarks), also as it was at git
revision REV with ``--baseline``. Prints one line per size and writes JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.alignment_fidelity import load_align_at
from pipeline.preprocess import align
from pipeline.preprocess.faces import FaceModels
from pipeline.preprocess.photo_io import load_photo
from pipeline.preprocess.steps import PreprocessSettings, preprocess

ROOT = Path(__file__).resolve().parent.parent


def sample_photo() -> np.ndarray:
    shared = Path(os.environ.get("CLEFTSCORE_SHARED", ROOT.parent / "shared")) / "faces" / "obama.jpg"
    if shared.is_file():
        return load_photo(shared)
    import matplotlib

    return load_photo(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")


def time_call(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 12, 24, 50], help="megapixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-size", type=int, default=1024)
    parser.add_argument("--baseline", help="git revision whose align_face is timed too")
    args = parser.parse_args()
    baseline = load_align_at(args.baseline) if args.baseline else None

    base = sample_photo()
    models = FaceModels()
    settings = PreprocessSettings(output_size=args.out_size)
    rows = []
    for megapixels in args.sizes:
        factor = np.sqrt(megapixels * 1e6 / (base.shape[0] * base.shape[1]))
        size = (round(base.shape[1] * factor), round(base.shape[0] * factor))
        photo = cv2.resize(base, size, interpolation=cv2.INTER_CUBIC)
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        del photo
        times, decode_times, align_times, baseline_times = [], [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            image = load_photo(data)
            decoded = time.perf_counter()
            result = preprocess(image, models, settings)
            times.append(time.perf_counter() - start)
            decode_times.append(decoded - start)
            align_times.append(time_call(align.align_face, image, result.landmarks_original, args.out_size))
            if baseline is not None:
                baseline_times.append(time_call(baseline.align_face, image, result.landmarks_original, args.out_size))
            del image
        row = {
            "megapixels": round(size[0] * size[1] / 1e6, 1), "width": size[0], "height": size[1],
            "median_s": round(statistics.median(times), 3), "decode_median_s": round(statistics.median(decode_times), 3),
            "align_median_s": round(statistics.median(align_times), 3),
        }
        text = (f"{row['megapixels']:5.1f} MP ({size[0]}×{size[1]}): {row['median_s']:.3f} s per photo "
                f"(JPEG decode {row['decode_median_s']:.3f} s, alignment {row['align_median_s']:.3f} s")
        if baseline is not None:
            row["baseline_align_median_s"] = round(statistics.median(baseline_times), 3)
            text += f", alignment at {args.baseline} {row['baseline_align_median_s']:.3f} s"
        rows.append(row)
        print(text + f"), median of {args.repeats}", flush=True)
    record = {
        "benchmark": "preprocess", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "command": "python -m benchmarks.preprocess " + " ".join(sys.argv[1:]),
        "output_size": args.out_size, "results": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"preprocess-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"→ {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
