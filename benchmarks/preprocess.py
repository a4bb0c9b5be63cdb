"""Preprocessing time per photo by photo size, on this machine's CPU.

    .venv/bin/python -m benchmarks.preprocess [--sizes 1 4 12 24 50] [--repeats 3] [--out-size 1024]

A real face photo (../shared/faces/obama.jpg, else matplotlib's grace_hopper.jpg)
is upscaled to each size and saved as a JPEG (quality 92); each repeat times decoding
that file plus detection, landmarks, pose, alignment and masks. Prints one line per
size and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 12, 24, 50], help="megapixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-size", type=int, default=1024)
    args = parser.parse_args()

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
        times, decode_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            image = load_photo(data)
            decoded = time.perf_counter()
            preprocess(image, models, settings)
            times.append(time.perf_counter() - start)
            decode_times.append(decoded - start)
            del image
        row = {
            "megapixels": round(size[0] * size[1] / 1e6, 1), "width": size[0], "height": size[1],
            "median_s": round(statistics.median(times), 3), "decode_median_s": round(statistics.median(decode_times), 3),
        }
        rows.append(row)
        print(f"{row['megapixels']:5.1f} MP ({size[0]}×{size[1]}): {row['median_s']:.3f} s per photo "
              f"(JPEG decode {row['decode_median_s']:.3f} s), median of {args.repeats}")
    record = {
        "benchmark": "preprocess", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "command": "python -m benchmarks.preprocess " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "output_size": args.out_size, "results": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"preprocess-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"→ {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
