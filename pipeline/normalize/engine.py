"""How the normalisation's one optimisation loop runs: :class:`PerformanceSettings`.

:func:`pipeline.normalize.inversion.invert` and :func:`pipeline.normalize.adaptation.adapt`
take these settings (the way stylegan2-ada's ops take ``impl=``); they choose how the
arithmetic runs, never what is optimised. Three kinds:

* exact (bitwise the reference arithmetic): the defaults and ``cache_target_features``
  (the target's LPIPS features computed once: the same operations on the same values).
  With the defaults a single photo reproduces the reference loops
  (tests/pipeline/normalize/oracles.py) bit for bit on the CPU.
* rewrites (the same function, summed in another order: results agree to float32
  rounding, which Adam can grow to ~1e-3 in single latent values): ``conv_form``,
  ``fir_impl``, ``fuse_upsampling``, ``channels_last``, ``group_noise_maps``,
  ``fused_adam``, ``compile``, ``cudnn_benchmark`` (cuDNN may pick other algorithms), and
  ``batch_size`` > 1 (photos inverted together by
  :func:`pipeline.normalize.inversion.invert_many`: batched kernels).
* precision (changes what is computed to lower precision): ``tf32`` and ``autocast``
  ("bf16"/"fp16"); they must pass the quality guard of ``benchmarks/normalize_gpu.py``
  before clinical use.

The defaults are the exact float32 path: no autocast, TF32 off (IEEE float32 on CUDA
too, where PyTorch would otherwise allow TF32 convolutions), no compile.

:func:`numerics` applies the process-wide TF32 and cuDNN flags for the duration of a
``with`` block and restores them afterwards (the loops do so on CUDA only). The flags are
process-wide: other threads computing on CUDA at the same time see them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

from pipeline.models.stylegan2.networks import CONV_FORMS, SynthesisImpl
from pipeline.models.stylegan2.ops import FIR_IMPLS

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: torch.compile modes; "reduce-overhead" replays CUDA graphs (CUDA only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

Fn = TypeVar("Fn", bound=Callable[..., Any])


@dataclass(frozen=True)
class PerformanceSettings:
    """How the optimisation loops run (see the module text for which settings are exact).

    Attributes:
        tf32: TF32 Tensor Cores for float32 matmuls and cuDNN convolutions (CUDA);
            False forces IEEE float32 there.
        autocast: None, "bf16" or "fp16": run convolutions and matmuls in that type
            (parameters, optimiser, losses and the RGB image stay float32). fp16 uses
            dynamic loss scaling, which may skip a step whose gradients overflow.
        channels_last: NHWC activations in the synthesis and into LPIPS.
        compile: wrap each step's objective in ``torch.compile`` (``compile_mode``, ``compile_backend``).
        cache_target_features: compute the target's LPIPS features once per photo (exact).
        batch_size: photos optimised together by :func:`pipeline.normalize.inversion.invert_many`.
        conv_form: modulated-convolution form, one of
            :data:`pipeline.models.stylegan2.networks.CONV_FORMS` ("reference": the reference's).
        fir_impl: FIR resampling, one of :data:`pipeline.models.stylegan2.ops.FIR_IMPLS`.
        fuse_upsampling: fold the FIR filter into the up-convolution's kernel (needs conv_form != "reference").
        group_noise_maps: the noise regulariser handles all maps of one size together (fewer kernels).
        cudnn_benchmark: let cuDNN time its algorithms for each new shape.
        fused_adam: the single-kernel Adam on CUDA (same formula).
        compile_mode, compile_backend: passed to ``torch.compile``.
    """

    tf32: bool = False
    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False
    cache_target_features: bool = True
    batch_size: int = 1
    conv_form: str = "reference"
    fir_impl: str = "reference"
    fuse_upsampling: bool = False
    group_noise_maps: bool = False
    cudnn_benchmark: bool = False
    fused_adam: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        for name in ("tf32", "channels_last", "compile", "cache_target_features", "fuse_upsampling",
                     "group_noise_maps", "cudnn_benchmark", "fused_adam"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"PerformanceSettings.{name} must be a bool, got {getattr(self, name)!r}")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"PerformanceSettings.autocast must be None or one of {sorted(AUTOCAST_DTYPES)}, "
                             f"got {self.autocast!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"PerformanceSettings.batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.conv_form not in CONV_FORMS:
            raise ValueError(f"PerformanceSettings.conv_form must be one of {CONV_FORMS}, got {self.conv_form!r}")
        if self.fir_impl not in FIR_IMPLS:
            raise ValueError(f"PerformanceSettings.fir_impl must be one of {FIR_IMPLS}, got {self.fir_impl!r}")
        if self.fuse_upsampling and self.conv_form == "reference":
            raise ValueError("PerformanceSettings.fuse_upsampling needs a conv_form other than 'reference'")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"PerformanceSettings.compile_mode must be one of {COMPILE_MODES}, "
                             f"got {self.compile_mode!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"PerformanceSettings.compile_backend must be a backend name, got {self.compile_backend!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.autocast is None else AUTOCAST_DTYPES[self.autocast]

    @property
    def uses_cuda_graphs(self) -> bool:
        return self.compile and self.compile_backend == "inductor" and self.compile_mode == "reduce-overhead"

    def synthesis_impl(self, batch: int) -> SynthesisImpl:
        """The synthesis forms these settings choose, resolved for ``batch`` samples."""
        return SynthesisImpl(conv_form=self.conv_form, fir=self.fir_impl, fuse_upsampling=self.fuse_upsampling,
                             channels_last=self.channels_last).for_batch(batch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The exact float32 path (the defaults).
EXACT = PerformanceSettings()


def check_settings(settings: PerformanceSettings, dtype: torch.dtype) -> None:
    """``settings`` must be PerformanceSettings; autocast mixes with float32 parameters only."""
    if not isinstance(settings, PerformanceSettings):
        raise TypeError(f"performance must be PerformanceSettings, got {type(settings).__name__}")
    if settings.autocast is not None and dtype != torch.float32:
        raise ValueError(f"autocast={settings.autocast!r} needs dtype float32, got {dtype}")


@contextlib.contextmanager
def numerics(settings: PerformanceSettings, device: torch.device | None = None) -> Iterator[None]:
    """Set TF32 (matmul and cuDNN convolution) and cudnn.benchmark as ``settings`` say; restore on exit.

    With a ``device`` that is not CUDA nothing is touched (the flags act on CUDA only).
    """
    if device is not None and torch.device(device).type != "cuda":
        yield
        return
    saved = _tf32_state()
    saved_benchmark = torch.backends.cudnn.benchmark
    try:
        _set_tf32(settings.tf32)
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        yield
    finally:
        _restore_tf32(saved)
        torch.backends.cudnn.benchmark = saved_benchmark


def autocast(settings: PerformanceSettings, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``settings.autocast`` on ``device``, or a no-op context."""
    if settings.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=settings.autocast_dtype)


#: fp16 loss scaling: start low (the inversion's loss is O(1e3) through the noise
#: regulariser, which runs in float32) and grow slowly; a step whose gradients overflow
#: is skipped and the scale halved.
FP16_INITIAL_LOSS_SCALE = 2.0**8
FP16_SCALE_GROWTH_INTERVAL = 200


def grad_scaler(settings: PerformanceSettings, device: torch.device) -> torch.amp.GradScaler | None:
    """Dynamic loss scaling for fp16 (bf16 and float32 need none)."""
    if settings.autocast != "fp16":
        return None
    return torch.amp.GradScaler(device.type, init_scale=FP16_INITIAL_LOSS_SCALE,
                                growth_interval=FP16_SCALE_GROWTH_INTERVAL)


def adam(params: list[torch.Tensor], lr: float, settings: PerformanceSettings, device: torch.device,
         betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam as the reference projector runs it; the fused CUDA kernel when asked for."""
    if settings.fused_adam and device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    return torch.optim.Adam(params, lr=lr, betas=betas)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None) -> None:
    """Backpropagate ``loss`` and step ``optimizer``, through the fp16 loss scaler when there is one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def memory_format(x: torch.Tensor, settings: PerformanceSettings) -> torch.Tensor:
    """``x`` in channels_last when asked for (images going into LPIPS, targets)."""
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def maybe_compile(fn: Fn, settings: PerformanceSettings) -> Fn:
    """``torch.compile(fn)`` as ``settings`` say (static shapes), else ``fn`` itself.

    Pass module-level functions: compiled code is cached per code object and reused
    across calls while its guards hold.
    """
    if not settings.compile:
        return fn
    kwargs: dict[str, Any] = {"backend": settings.compile_backend, "dynamic": False}
    if settings.compile_backend == "inductor" and settings.compile_mode != "default":
        kwargs["mode"] = settings.compile_mode
    return torch.compile(fn, **kwargs)


def mark_step(settings: PerformanceSettings) -> None:
    """Tell CUDA-graph trees that a new optimisation step begins (outputs of the last one are consumed)."""
    if settings.uses_cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()


# -- TF32 flags: the per-backend API of torch >= 2.9, else the legacy booleans ---------------

def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _tf32_state() -> tuple[str, Any, Any]:
    if _new_api():
        return ("new", torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    return ("legacy", torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def _set_tf32(enabled: bool) -> None:
    if _new_api():
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _restore_tf32(state: tuple[str, Any, Any]) -> None:
    api, matmul, conv = state
    if api == "new":
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv
    else:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def tf32_flags() -> dict[str, Any]:
    """The current TF32 flags, for records."""
    api, matmul, conv = _tf32_state()
    return {"api": api, "matmul": matmul, "cudnn_conv": conv}
