"""Milliseconds per inversion and adaptation step of our own code.

    .venv/bin/python -m benchmarks.normalize --res 256 --steps 20 --device cpu [--adapt-steps 10]
        [--lpips-net vgg] [--config f|small] [--threads N]

The one optimisation loop in its default (exact float32) settings, one photo.
Random weights (compute does not depend on the values): ``--config f`` is the
official FFHQ config-f layout at the given resolution (z = w = 512, 8 mapping
layers, channel_base 32768, channel_max 512); ``small`` is the demo bundle's. LPIPS
uses a random backbone of the named network at 256² (the method's size). The
target is a generated image. Prints one line and writes JSON under
benchmarks/results/ with the machine, torch version, command and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from pipeline.models.stylegan2 import GeneratorConfig, build_generator
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert
from pipeline.normalize.perceptual import load_lpips

ROOT = Path(__file__).resolve().parent.parent


def generator_config(name: str, resolution: int) -> GeneratorConfig:
    if name == "f":
        return GeneratorConfig(z_dim=512, w_dim=512, img_resolution=resolution, channel_base=32768, channel_max=512)
    return GeneratorConfig(z_dim=64, w_dim=64, img_resolution=resolution, mapping_layers=4,
                           channel_base=max(1024, resolution * 8), channel_max=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--adapt-steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", choices=("f", "small"), default="f")
    parser.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    G = build_generator(generator_config(args.config, args.res), seed=0).to(device)
    lpips_model = load_lpips(args.lpips_net, None, allow_random_backbone=True, device=device)
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)).to(device)).clamp(-1, 1)
    stats = compute_w_stats(G, 2000, 123, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    settings = InversionSettings(steps=args.steps, w_avg_samples=2000)
    invert(G, target, lpips_model, InversionSettings(steps=2, w_avg_samples=2000), w_stats=stats, device=device)  # warm-up
    sync()
    start = time.perf_counter()
    (inversion,) = invert(G, target, lpips_model, settings, w_stats=stats, device=device)
    sync()
    inversion_ms = (time.perf_counter() - start) / args.steps * 1000
    start = time.perf_counter()
    adapt(G, target, inversion.w, inversion.noise, lpips_model, AdaptationSettings(steps=args.adapt_steps), device=device)
    sync()
    adaptation_ms = (time.perf_counter() - start) / args.adapt_steps * 1000
    protocol_s = (2000 * inversion_ms + 50 * adaptation_ms) / 1000
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"{card}, config-{args.config} {args.res}², LPIPS-{args.lpips_net}: inversion {inversion_ms:.1f} ms/step, "
          f"adaptation {adaptation_ms:.1f} ms/step → paper protocol (2000 + 50 steps) ≈ {protocol_s:.0f} s per photo "
          f"({torch.get_num_threads()} CPU threads)")
    record = {
        "benchmark": "normalize", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": card, "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "command": "python -m benchmarks.normalize " + " ".join(sys.argv[1:]),
        "resolution": args.res, "config": args.config, "lpips_net": args.lpips_net,
        "inversion_ms_per_step": round(inversion_ms, 2), "adaptation_ms_per_step": round(adaptation_ms, 2),
        "protocol_seconds_estimate": round(protocol_s, 1),
    }
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"normalize-{args.device.replace(':', '')}-{args.res}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"→ {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
