"""Entry points: build a random generator, or load one from any supported file."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelError
from pipeline.models.stylegan2.config import GeneratorConfig
from pipeline.models.stylegan2.export import load_exported
from pipeline.models.stylegan2.networks import Generator
from pipeline.models.stylegan2.pickle_loader import load_official_pickle
from pipeline.models.stylegan2.rosinality import load_rosinality
from pipeline.models.stylegan2.state import randomize_

SUFFIXES = (".pkl", ".pt", ".pth", ".safetensors")


def build_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    """A randomly initialised generator, identical for equal ``(config, seed)`` (CPU, float32, eval).

    See :func:`pipeline.models.stylegan2.state.randomize_` for the distributions; ``w_avg`` is
    computed as the mean mapping output of 2048 seeded latents.
    """
    if not isinstance(config, GeneratorConfig):
        raise TypeError(f"config must be a GeneratorConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    generator = Generator(config)
    randomize_(generator, seed)
    return generator.eval()


def load_generator(path: str | Path) -> Generator:
    """Load by suffix: ``.pkl`` official NVIDIA pickle (no code runs), ``.pt``/``.pth``
    rosinality checkpoint, ``.safetensors`` our export (with ``.json`` beside it).

    Returns a float32 generator on the CPU in eval mode; raises :class:`ModelError`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return load_official_pickle(path)
    if suffix in (".pt", ".pth"):
        return load_rosinality(path)
    if suffix == ".safetensors":
        return load_exported(path)
    raise ModelError(f"cannot load generator {str(path)!r}: suffix must be one of {list(SUFFIXES)}")
