"""Our own generator format: ``X.safetensors`` (every state tensor) + ``X.json`` (config).

Neither file can run code. ``X.json`` is ``{"format": "cleftscore-stylegan2",
"format_version": 1, "config": GeneratorConfig.to_json_dict()}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.errors import ModelError
from pipeline.models.stylegan2.config import GeneratorConfig
from pipeline.models.stylegan2.networks import Generator
from pipeline.models.stylegan2.state import load_state_strict

FORMAT_NAME = "cleftscore-stylegan2"
FORMAT_VERSION = 1


def export_paths(path: str | Path) -> tuple[Path, Path]:
    """(X.safetensors, X.json) for ``X`` or ``X.safetensors``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix == ".safetensors" else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_generator(generator: Generator, path: str | Path) -> Path:
    """Write ``X.safetensors`` and ``X.json``; returns the ``.safetensors`` path."""
    if not isinstance(generator, Generator):
        raise TypeError(f"save_generator needs a stylegan2 Generator, got {type(generator).__name__}")
    weights_path, config_path = export_paths(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
               for k, v in generator.state_dict().items()}
    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "config": generator.config.to_json_dict()}
    # One metadata entry: safetensors writes a metadata map in hash order, so several
    # keys would make the file's bytes (and the bundle identity hash) vary between runs.
    save_file(tensors, str(weights_path), metadata={"format": f"{FORMAT_NAME}/{FORMAT_VERSION}"})
    config_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return weights_path


def load_exported(path: str | Path) -> Generator:
    """Read what :func:`save_generator` wrote, strictly (CPU, float32, eval)."""
    weights_path, config_path = export_paths(path)
    source = f"generator file {str(weights_path)!r}"
    for p in (weights_path, config_path):
        if not p.is_file():
            raise ModelError(f"{source}: {str(p)!r} does not exist")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{source}: config {str(config_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ModelError(f"{source}: {str(config_path)!r} is not a {FORMAT_NAME} config")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{source}: unsupported format_version {document.get('format_version')!r}")
    if set(document) != {"format", "format_version", "config"}:
        raise ModelError(f"{source}: unexpected keys in {str(config_path)!r}: {sorted(document)}")
    try:
        config = GeneratorConfig.from_json_dict(document["config"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{source}: invalid config: {exc}") from exc
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{source}: unreadable safetensors file: {exc}") from exc
    generator = Generator(config)
    load_state_strict(generator, tensors, source)
    return generator.eval()
