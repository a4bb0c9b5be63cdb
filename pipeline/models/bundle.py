"""A model bundle: the generator, the LPIPS metric and the face models, with one identity.

A bundle is a folder with ``manifest.json`` (written by ``cleftscore models install``
or ``models make-demo``), the generator file and, for clinical bundles, torchvision's
ImageNet backbone file for LPIPS. The identity (a SHA-256 over every weight file's
hash) goes into every result, so a score can always be traced to the weights that
made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ModelError
from pipeline.hashing import file_sha256
from pipeline.preprocess.faces import FaceModels
from pipeline.vocabulary import NON_CLINICAL_LABEL

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ModelIdentity:
    """What produced a result: bundle name, identity hash, and whether it is clinical."""

    name: str
    identity: str
    non_clinical: bool
    generator_sha256: str
    lpips_net: str
    lpips_backbone_sha256: str | None
    resolution: int
    description: str

    @property
    def label(self) -> str:
        """Text to show beside every output: empty for clinical bundles."""
        return NON_CLINICAL_LABEL if self.non_clinical else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "identity": self.identity, "non_clinical": self.non_clinical,
            "generator_sha256": self.generator_sha256, "lpips_net": self.lpips_net,
            "lpips_backbone_sha256": self.lpips_backbone_sha256, "resolution": self.resolution,
            "description": self.description,
        }


@dataclass(frozen=True)
class ModelBundle:
    """Loaded models, ready for :func:`pipeline.appraise.appraise`.

    ``lpips`` is the loss metric (one distance per image), ``lpips_spatial`` the same
    weights giving per-pixel maps for the LPIPS heatmaps.
    """

    identity: ModelIdentity
    generator: torch.nn.Module
    lpips: torch.nn.Module
    lpips_spatial: torch.nn.Module
    face_models: FaceModels
    folder: Path


def bundle_identity(generator_sha256: str, lpips_net: str, backbone_sha256: str | None, heads_sha256: str) -> str:
    """SHA-256 over the hashes of every weight file that shapes a score."""
    canonical = json.dumps(
        {"generator": generator_sha256, "lpips_net": lpips_net, "lpips_backbone": backbone_sha256 or "random-seed-0",
         "lpips_heads": heads_sha256},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"No model bundle at {folder}: {MANIFEST} is missing.") from error
    except json.JSONDecodeError as error:
        raise ModelError(f"The bundle manifest {path} is not valid JSON ({error}).") from error
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"The bundle manifest {path} has format {manifest.get('format')!r}; expected {MANIFEST_FORMAT}.")
    return manifest


def verify_bundle(folder: Path) -> list[str]:
    """Recompute every file hash; return one sentence per problem (empty when sound)."""
    manifest = read_manifest(folder)
    problems = []
    for part, file_key, sha_key in (("generator", "file", "sha256"), ("generator", "config_file", "config_sha256"),
                                    ("lpips", "file", "sha256")):
        entry = manifest[part]
        if entry.get(file_key) is None:
            continue
        path = Path(folder) / entry[file_key]
        if not path.is_file():
            problems.append(f"The {part} file {entry[file_key]} is missing.")
        elif file_sha256(path) != entry[sha_key]:
            problems.append(f"The {part} file {entry[file_key]} does not match its recorded SHA-256.")
    expected = bundle_identity(manifest["generator"]["sha256"], manifest["lpips"]["net"],
                               manifest["lpips"].get("sha256"), manifest["lpips"]["heads_sha256"])
    if manifest.get("identity") != expected:
        problems.append("The manifest's identity does not match the hashes it records.")
    return problems


def load_bundle(folder: Path, *, device: str | torch.device = "cpu", verify: bool = True,
                face_models: FaceModels | None = None) -> ModelBundle:
    """Load a bundle folder; with ``verify`` every file's hash is checked first.

    Raises:
        ModelError: missing or altered files, or weights that do not load strictly.
    """
    from pipeline.models.stylegan2 import load_generator
    from pipeline.normalize.perceptual import load_lpips

    folder = Path(folder)
    manifest = read_manifest(folder)
    if verify:
        problems = verify_bundle(folder)
        if problems:
            raise ModelError(f"The model bundle {manifest.get('name', folder.name)} is damaged: " + " ".join(problems))
    generator = load_generator(folder / manifest["generator"]["file"]).to(device).eval()
    lpips_entry = manifest["lpips"]
    backbone = folder / lpips_entry["file"] if lpips_entry.get("file") else None
    non_clinical = bool(manifest["non_clinical"])
    if backbone is None and not non_clinical:
        raise ModelError("A clinical bundle needs the LPIPS ImageNet backbone file; its manifest names none.")
    lpips_loss = load_lpips(lpips_entry["net"], backbone, allow_random_backbone=non_clinical, device=device)
    lpips_spatial = load_lpips(lpips_entry["net"], backbone, allow_random_backbone=non_clinical, spatial=True, device=device)
    if lpips_loss.identity.heads_sha256 != lpips_entry["heads_sha256"]:
        raise ModelError(
            "The installed lpips package's linear heads differ from those this bundle was made with; "
            "reinstall the pinned lpips version or re-create the bundle."
        )
    identity = ModelIdentity(
        name=manifest["name"],
        identity=manifest["identity"],
        non_clinical=non_clinical or not lpips_loss.identity.clinical,
        generator_sha256=manifest["generator"]["sha256"],
        lpips_net=lpips_entry["net"],
        lpips_backbone_sha256=lpips_entry.get("sha256"),
        resolution=int(generator.img_resolution),
        description=manifest.get("description", ""),
    )
    return ModelBundle(identity=identity, generator=generator, lpips=lpips_loss, lpips_spatial=lpips_spatial,
                       face_models=face_models or FaceModels(), folder=folder)
