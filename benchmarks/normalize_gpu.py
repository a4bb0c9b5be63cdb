"""GPU performance of the normalisation (method.md 2a + 2b), with its quality guard.

    python -m benchmarks.normalize_gpu [--sections timing,guard,fast] [options]   # config-f 1024², CUDA
    python -m benchmarks.normalize_gpu --smoke [--out FILE]                       # tiny generator, CPU

Random weights (compute does not depend on the values): config-f (z = w = 512, 8
mapping layers, channel_base 32768, channel_max 512, skip) at ``--resolution``; LPIPS
with a random backbone of ``--lpips-net`` at 256² (the method's size). Sections, each
written to the JSON as soon as it is done (a time-out keeps what finished):

timing   per variant (see VARIANTS): ms per inversion and adaptation step (difference
         of a short and a long run after a warm-up, so per-call setup is separate),
         seconds per photo for 2000 + 50 steps, peak GPU memory; then photos per
         minute for batches of ``--batch-sizes`` photos with ``--throughput-variant``,
         and the FAST schedule's seconds per photo.
guard    the float32 reference (the "exact" rewrites, batched; shown equal to the default
         settings, the reference arithmetic, on one target in the same run) against ``--guard-variants``
         on ``--guard-targets`` targets with the same seeds: final LPIPS (mean
         within ``--lpips-tolerance``) and scores (max |ΔS|, Pearson r >= ``--min-r``).
fast     the FAST schedule with ``--fast-variant`` against the float32 paper protocol on
         the same targets: score agreement (goal r >= 0.98); with ``--seed-baseline`` also
         the paper protocol with another seed, for how much scores move by chance alone.

The "reference" variant is the default PerformanceSettings() of the one loop: the reference
arithmetic in strict IEEE float32 (TF32 off), the straightforward baseline; "exact" adds the
exact rewrites (cheaper convolution forms, depthwise FIR, grouped noise regulariser, fused
Adam). Without --smoke it needs CUDA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks import normalize_gpu_quality as quality
from pipeline.models.stylegan2 import GeneratorConfig, build_generator
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.engine import PerformanceSettings, tf32_flags
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert
from pipeline.normalize.perceptual import load_lpips
from pipeline.normalize.schedules import FastSchedule

ROOT = Path(__file__).resolve().parent.parent
PAPER_INVERSION_STEPS, PAPER_ADAPTATION_STEPS = 2000, 50
_EXACT = PerformanceSettings(conv_form="auto", fir_impl="depthwise", group_noise_maps=True, fused_adam=True)
_CL = replace(_EXACT, channels_last=True, cudnn_benchmark=True)
_TF32 = replace(_CL, tf32=True)
_BF16 = replace(_TF32, autocast="bf16")
#: Each adds one thing to the one above it (fuse = FIR folded into the up-convolution kernel).
VARIANTS: dict[str, PerformanceSettings] = {
    "reference": PerformanceSettings(),
    "exact": _EXACT,
    "exact-cl": _CL,
    "exact-cl-fuse": replace(_CL, fuse_upsampling=True),
    "tf32": _TF32,
    "bf16": _BF16,
    "bf16-fuse": replace(_BF16, fuse_upsampling=True),
    "tf32-compile": replace(_TF32, compile=True),
    "bf16-compile": replace(_BF16, compile=True),
    "bf16-graphs": replace(_BF16, compile=True, compile_mode="reduce-overhead"),
}
SMOKE_VARIANTS = ("reference", "exact", "exact-cl-fuse", "tf32", "bf16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny generator on the CPU, few steps: checks the script")
    p.add_argument("--smoke-compile", action="store_true", help="with --smoke: also the compile variants (aot_eager)")
    p.add_argument("--sections", default="timing,guard,fast")
    p.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    p.add_argument("--resolution", type=int, default=None, help="default 1024 (64 with --smoke)")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default=None, help="default vgg (alex with --smoke)")
    p.add_argument("--variants", default=None, help=f"comma list of {list(VARIANTS)} (default all; smoke: a subset)")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--timing-steps", type=int, default=None, help="long timing run (the short one is a fifth)")
    p.add_argument("--timing-adapt-steps", type=int, default=None)
    p.add_argument("--batch-sizes", default=None, help="default 1,2,4,8 (smoke 1,4)")
    p.add_argument("--throughput-variant", default="best", help="a variant name, or best = fastest timed")
    p.add_argument("--guard-variants", default=None, help="default tf32,bf16,bf16-compile (smoke tf32,bf16)")
    p.add_argument("--guard-targets", type=int, default=16)
    p.add_argument("--guard-batch", type=int, default=8)
    p.add_argument("--guard-inversion-steps", type=int, default=None, help="default 2000 (smoke 6)")
    p.add_argument("--guard-adaptation-steps", type=int, default=None, help="default 50 (smoke 2)")
    p.add_argument("--check-steps", type=int, default=None, help="default settings vs exact rewrites, default 20")
    p.add_argument("--lpips-tolerance", type=float, default=0.02)
    p.add_argument("--min-r", type=float, default=0.98)
    p.add_argument("--fast-variant", default=None, help="default bf16-compile (smoke bf16)")
    p.add_argument("--seed-baseline", action="store_true",
                   help="fast section: also the paper protocol with another seed against the reference "
                        "(how far scores move by chance alone; one more full-protocol run)")
    p.add_argument("--w-samples", type=int, default=None, help="w statistics samples, default 10000 (smoke 500)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"device": "cpu" if smoke else "cuda", "resolution": 64 if smoke else 1024,
                "lpips_net": "alex" if smoke else "vgg",
                "warmup_steps": 1 if smoke else 5, "timing_steps": 5 if smoke else 60,
                "timing_adapt_steps": 3 if smoke else 20, "batch_sizes": "1,4" if smoke else "1,2,4,8",
                "guard_variants": "tf32,bf16" if smoke else "tf32,bf16,bf16-compile",
                "guard_inversion_steps": 4 if smoke else PAPER_INVERSION_STEPS,
                "guard_adaptation_steps": 2 if smoke else PAPER_ADAPTATION_STEPS, "check_steps": 3 if smoke else 20,
                "fast_variant": "bf16" if smoke else "bf16-compile", "w_samples": 500 if smoke else 10_000}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.variants is None:
        args.variants = ",".join(SMOKE_VARIANTS + (("tf32-compile", "bf16-compile") if args.smoke_compile else ())
                                 if smoke else VARIANTS)
    for name in _names(args.variants) + _names(args.guard_variants) + [args.fast_variant]:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    if args.guard_targets < 2:
        p.error("--guard-targets must be at least 2 (16 for the issue's guard)")
    return args


def variant(name: str, smoke: bool) -> PerformanceSettings:
    """The named settings; on the CPU smoke run compile uses aot_eager (inductor needs minutes there)."""
    settings = VARIANTS[name]
    if smoke and settings.compile:
        settings = replace(settings, compile_backend="aot_eager", compile_mode="default")
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("normalize_gpu needs a CUDA device, and torch.cuda.is_available() is False here. "
              "Run it on the GPU machine, or use --smoke for the CPU check of the script.", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    config = (GeneratorConfig(z_dim=32, w_dim=32, img_resolution=args.resolution, mapping_layers=2, channel_base=512,
                              channel_max=32) if args.smoke else
              GeneratorConfig(z_dim=512, w_dim=512, img_resolution=args.resolution, channel_base=32768, channel_max=512))
    G = build_generator(config, seed=0).to(device)
    lpips_model = load_lpips(args.lpips_net, None, allow_random_backbone=True, device=device)
    w_stats = compute_w_stats(G, args.w_samples, 123, device=device)
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"normalize_gpu-{'smoke' if args.smoke else device.type}-{args.resolution}-"
        f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}.json")
    record = {"benchmark": "normalize_gpu", "smoke": args.smoke,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m benchmarks.normalize_gpu " + " ".join(sys.argv[1:] if argv is None else argv),
              "environment": environment(device), "generator_config": config.to_json_dict(),
              "lpips": {"net": args.lpips_net, "backbone": "random (compute only)", "side": 256},
              "protocol": {"inversion_steps": PAPER_INVERSION_STEPS, "adaptation_steps": PAPER_ADAPTATION_STEPS},
              "variants": {n: s.to_dict() for n, s in VARIANTS.items()},
              "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    sections = _names(args.sections)
    _write(out, record)
    context = (G, lpips_model, w_stats, device)
    if "timing" in sections:
        record["timing"] = timing_section(args, context, record, out)
        _write(out, record)
    reference_run = None
    targets = region = None
    if "guard" in sections or "fast" in sections:
        targets, region = quality.guard_targets(G, args.guard_targets, device)
    if "guard" in sections:
        record["guard"], reference_run = guard_section(args, context, targets, region, record, out)
        _write(out, record)
    if "fast" in sections:
        record["fast"] = fast_section(args, context, targets, region, reference_run)
        _write(out, record)
    print(f"-> {out}")
    return 0


def timing_section(args, context, record: dict, out: Path) -> dict:
    G, lpips_model, w_stats, device = context
    section: dict = {"variants": {}}
    with torch.no_grad():
        targets = G(torch.randn(max(_batch_sizes(args)), G.z_dim, generator=torch.Generator().manual_seed(1))
                    .to(device)).clamp(-1, 1)
    for name in _names(args.variants):
        settings = variant(name, args.smoke)
        print(f"[timing] {name} ...", flush=True)
        section["variants"][name] = _guarded(lambda: time_variant(args, context, targets, settings, batch=1))
        record["timing"] = section
        _write(out, record)
    timed = {n: v for n, v in section["variants"].items() if "error" not in v and n != "reference"}
    name = args.throughput_variant
    if name == "best" and timed:
        name = min(timed, key=lambda n: timed[n]["inversion_ms_per_step"])
    if name in VARIANTS and name != "reference":
        settings = variant(name, args.smoke)
        rows = {}
        for batch in _batch_sizes(args):
            print(f"[throughput] {name} batch {batch} ...", flush=True)
            rows[str(batch)] = _guarded(lambda: time_variant(args, context, targets, settings, batch=batch))
        section["throughput"] = {"variant": name, "by_batch_size": rows}
        section["fast_mode"] = _guarded(lambda: fast_mode_timing(args, context, targets, settings))
    return section


def time_variant(args, context, targets: torch.Tensor, settings: PerformanceSettings, batch: int) -> dict:
    """ms per step (long minus short run), setup seconds, protocol seconds per photo, peak memory."""
    G, lpips_model, w_stats, device = context
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inversion = _step_timer(args, device, lambda steps: _invert(context, targets[:batch], steps, settings))
    w = w_stats.w_avg.to(device).repeat(batch, G.num_ws, 1)
    noise = {n: torch.randn(batch, 1, h, x, device=device) for n, (h, x) in G.synthesis.noise_shapes.items()}
    adaptation = _step_timer(args, device, lambda steps: _adapt(context, targets[:1], w[:1],
                                                                 {k: v[:1] for k, v in noise.items()}, steps, settings),
                             steps=args.timing_adapt_steps)
    per_photo = ((inversion["setup_s"] + PAPER_INVERSION_STEPS * inversion["ms_per_step"] / 1000) / batch
                 + adaptation["setup_s"] + PAPER_ADAPTATION_STEPS * adaptation["ms_per_step"] / 1000)
    result = {"batch_size": batch, "inversion_ms_per_step": inversion["ms_per_step"],
              "inversion_ms_per_step_per_photo": inversion["ms_per_step"] / batch,
              "inversion_setup_s": inversion["setup_s"], "adaptation_ms_per_step": adaptation["ms_per_step"],
              "adaptation_setup_s": adaptation["setup_s"], "warmup_s": inversion["warmup_s"],
              "inversion_ms_per_step_with_setup": inversion["ms_per_step_with_setup"],
              "seconds_per_photo": per_photo, "photos_per_minute": 60.0 / per_photo}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print("   " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)), flush=True)
    return result


def fast_mode_timing(args, context, targets: torch.Tensor, settings: PerformanceSettings) -> dict:
    """FAST schedule seconds per photo: coarse steps at the coarse block, refinement at full size, adaptation."""
    G, *_ = context
    schedule = FastSchedule()
    coarse = schedule.coarse_resolution(int(G.img_resolution))
    timer = _step_timer(args, context[3], lambda steps: _invert(context, targets[:1], steps, settings, coarse))
    full = _step_timer(args, context[3], lambda steps: _invert(context, targets[:1], steps, settings))
    adaptation = _step_timer(args, context[3], lambda steps: _adapt(
        context, targets[:1], context[2].w_avg.to(context[3]).repeat(1, G.num_ws, 1),
        {n: torch.randn(1, 1, h, w, device=context[3]) for n, (h, w) in G.synthesis.noise_shapes.items()},
        steps, settings), steps=args.timing_adapt_steps)
    coarse_steps = schedule.coarse_steps(PAPER_INVERSION_STEPS)
    refine_steps = schedule.refine_steps(PAPER_INVERSION_STEPS)
    seconds = (timer["setup_s"] + coarse_steps * timer["ms_per_step"] / 1000 + full["setup_s"]
               + refine_steps * full["ms_per_step"] / 1000 + adaptation["setup_s"]
               + PAPER_ADAPTATION_STEPS * adaptation["ms_per_step"] / 1000)
    return {"schedule": schedule.to_dict(), "coarse_resolution": coarse, "coarse_steps": coarse_steps,
            "refine_steps": refine_steps, "coarse_ms_per_step": timer["ms_per_step"],
            "full_ms_per_step": full["ms_per_step"], "adaptation_ms_per_step": adaptation["ms_per_step"],
            "seconds_per_photo_batch_1": seconds}


def guard_section(args, context, targets, region, record: dict, out: Path) -> tuple[dict, quality.ProtocolRun]:
    G, lpips_model, w_stats, device = context
    inversion = InversionSettings(steps=args.guard_inversion_steps, w_avg_samples=args.w_samples)
    adaptation = AdaptationSettings(steps=args.guard_adaptation_steps)
    section: dict = {"targets": int(targets.shape[0]), "inversion_steps": inversion.steps,
                     "adaptation_steps": adaptation.steps, "batch_size": args.guard_batch}
    print("[guard] default settings vs exact rewrites ...", flush=True)
    section["reference_loop_vs_exact_engine"] = quality.reference_vs_engine(G, lpips_model, targets[:1], w_stats,
                                                                            args.check_steps, device, VARIANTS["exact"])
    print("[guard] float32 reference (exact rewrites) ...", flush=True)
    exact = quality.with_batch(VARIANTS["exact"], args.guard_batch)
    reference = quality.run_protocol(G, lpips_model, targets, region, w_stats, inversion, adaptation, exact, device)
    section["reference"] = reference.to_dict()
    section["candidates"] = {}
    for name in _names(args.guard_variants):
        print(f"[guard] {name} ...", flush=True)
        settings = quality.with_batch(variant(name, args.smoke), args.guard_batch)

        def check(settings=settings) -> dict:
            run = quality.run_protocol(G, lpips_model, targets, region, w_stats, inversion, adaptation, settings,
                                       device)
            return {**quality.compare_runs(reference, run, args.lpips_tolerance, args.min_r), "run": run.to_dict()}

        section["candidates"][name] = _guarded(check)
        verdict = section["candidates"][name].get("passed", "error")
        print(f"   passed: {verdict}", flush=True)
        record["guard"] = section
        _write(out, record)
    return section, reference


def fast_section(args, context, targets, region, reference: quality.ProtocolRun | None) -> dict:
    G, lpips_model, w_stats, device = context
    inversion = InversionSettings(steps=args.guard_inversion_steps, w_avg_samples=args.w_samples)
    adaptation = AdaptationSettings(steps=args.guard_adaptation_steps)
    if reference is None:
        print("[fast] float32 paper reference ...", flush=True)
        exact = quality.with_batch(VARIANTS["exact"], args.guard_batch)
        reference = quality.run_protocol(G, lpips_model, targets, region, w_stats, inversion, adaptation, exact, device)
    settings = quality.with_batch(variant(args.fast_variant, args.smoke), args.guard_batch)
    schedule = FastSchedule()
    print(f"[fast] {args.fast_variant} ...", flush=True)

    def run() -> dict:
        fast = quality.run_protocol(G, lpips_model, targets, region, w_stats, inversion, adaptation, settings,
                                    device, schedule=schedule)
        comparison = quality.compare_runs(reference, fast, args.lpips_tolerance, args.min_r)
        return {**comparison, "goal_r_0_98_met": comparison["scores_with_adaptation"]["pearson_r"] >= 0.98,
                "schedule": schedule.to_dict(), "coarse_resolution": schedule.coarse_resolution(int(G.img_resolution)),
                "coarse_steps": schedule.coarse_steps(inversion.steps), "refine_steps": schedule.refine_steps(inversion.steps),
                "variant": args.fast_variant, "reference_seconds": reference.seconds, "run": fast.to_dict()}

    result = _guarded(run)
    if args.seed_baseline:
        print("[fast] paper protocol with another seed ...", flush=True)

        def seed_baseline() -> dict:
            exact = quality.with_batch(VARIANTS["exact"], args.guard_batch)
            other = quality.run_protocol(G, lpips_model, targets, region, w_stats, inversion, adaptation, exact,
                                         device, seed=quality.SEED + 1)
            return {**quality.compare_runs(reference, other, args.lpips_tolerance, args.min_r), "seed": quality.SEED + 1,
                    "run": other.to_dict()}

        result["paper_with_another_seed"] = _guarded(seed_baseline)
    return result


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "tf32_flags_at_start": tf32_flags(),
            "git_revision": _command(["git", "-C", str(ROOT), "rev-parse", "HEAD"])}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"card": torch.cuda.get_device_name(device), "capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": props.total_memory / 2**30, "cudnn": torch.backends.cudnn.version(),
                     "driver": _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])})
    else:
        info["card"] = None
    return info


def _invert(context, targets, steps, settings, max_resolution=None):
    G, lpips_model, w_stats, device = context
    inversion = InversionSettings(steps=steps, w_avg_samples=w_stats.samples)
    return invert(G, targets, lpips_model, inversion, w_stats=w_stats, device=device, performance=settings,
                  max_resolution=max_resolution)


def _adapt(context, target, w, noise, steps, settings):
    G, lpips_model, _, device = context
    return adapt(G, target, w, noise, lpips_model, AdaptationSettings(steps=steps), device=device,
                 performance=settings)


def _step_timer(args, device: torch.device, run, steps: int | None = None) -> dict:
    """Warm up, then time a short and a long run: ms per step from their difference, the rest is setup."""
    long_steps = steps or args.timing_steps
    short_steps = max(1, long_steps // 5)
    started = time.perf_counter()
    run(args.warmup_steps)
    _sync(device)
    warmup = time.perf_counter() - started
    times = []
    for count in (short_steps, long_steps):
        _sync(device)
        started = time.perf_counter()
        run(count)
        _sync(device)
        times.append(time.perf_counter() - started)
    overall = times[1] / long_steps  # an upper bound: includes the setup
    per_step = (times[1] - times[0]) / (long_steps - short_steps) if long_steps > short_steps else overall
    if not 0 < per_step <= overall:  # timing noise larger than the setup: fall back to the bound
        per_step = overall
    return {"ms_per_step": per_step * 1000, "ms_per_step_with_setup": overall * 1000,
            "setup_s": max(times[0] - short_steps * per_step, 0.0), "warmup_s": warmup}


def _guarded(compute) -> dict:
    """Run one measurement; an error (compile failure, out of memory) is recorded, not fatal."""
    try:
        return compute()
    except Exception as error:  # noqa: BLE001 - every failure is reported in the JSON
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(f"   error: {type(error).__name__}: {error}", flush=True)
        return {"error": f"{type(error).__name__}: {error}"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _batch_sizes(args) -> list[int]:
    return [int(part) for part in _names(args.batch_sizes)]


def _command(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    temporary.replace(path)


if __name__ == "__main__":
    sys.exit(main())
