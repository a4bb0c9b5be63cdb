"""The model store: installing, listing and verifying model bundles.

Store layout: ``<store>/<bundle name>/`` holding ``manifest.json`` and the weight
files (see :mod:`pipeline.models.bundle`). Files come from a local path (hospitals without
internet copy them from removable media) or an http(s)/file URL, land in a staging
folder, are checked (SHA-256, strict loading), and only then become a bundle.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from db.timeutil import utc_now
from pipeline.errors import ModelError
from pipeline.hashing import file_sha256
from pipeline.models.bundle import (
    MANIFEST,
    MANIFEST_FORMAT,
    ModelBundle,
    bundle_identity,
    load_bundle,
    read_manifest,
    verify_bundle,
)
from service.config.settings import check_bundle_name

DEMO_BUNDLE = "demo"
_TORCHVISION_NAME = re.compile(r"^[a-z0-9_]+-([0-9a-f]{8})\.pth$")
#: SHA-256 prefixes of torchvision's released ImageNet backbones.
OFFICIAL_BACKBONE_PREFIXES = {"vgg": "397923af", "alex": "7be5be79"}


@dataclass(frozen=True)
class BundleSummary:
    name: str
    identity: str
    non_clinical: bool
    resolution: int
    lpips_net: str
    created_at: str
    problems: tuple[str, ...]


def check_name(name: str) -> str:
    """``name`` if it may name a bundle (the configuration's rule); ModelError otherwise."""
    try:
        return check_bundle_name(name)
    except ValueError as error:
        raise ModelError(f"The {error}.") from None


def fetch_to(source: str, target: Path) -> None:
    """Copy a local path or download an http(s)/file URL to ``target``."""
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        try:
            with urllib.request.urlopen(source, timeout=60) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as error:
            raise ModelError(f"Could not download {source}: {error}.") from error
        return
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"The model file {source} does not exist.")
    shutil.copyfile(path, target)


def _file_name(source: str) -> str:
    return Path(urllib.parse.urlparse(source).path).name or "download"


def _check_sha(path: Path, expected: str | None, what: str) -> str:
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise ModelError(f"The {what} file's SHA-256 is {actual}, not the expected {expected.lower()}.")
    return actual


def install_bundle(store: Path, name: str, generator: str, lpips_backbone: str | None, *, lpips_net: str = "vgg",
                   generator_sha256: str | None = None, lpips_sha256: str | None = None,
                   description: str = "", demo: bool = False) -> Path:
    """Install a bundle from a generator file and torchvision's LPIPS backbone file.

    The generator must load strictly (official pickle, rosinality ``.pt`` or our
    safetensors export). The backbone's SHA-256 must start with the 8 hex digits in
    torchvision's file name, or equal ``lpips_sha256``. ``demo`` bundles may omit
    the backbone (a fixed-seed random one is used) and are labelled non-clinical.
    """
    from pipeline.models.stylegan2 import load_generator
    from pipeline.normalize.perceptual import load_lpips

    check_name(name)
    target = Path(store) / name
    if target.exists():
        raise ModelError(f"A bundle named {name} already exists in {store}; choose another name.")
    if lpips_backbone is None and not demo:
        raise ModelError("A clinical bundle needs --lpips-backbone (torchvision's vgg16-397923af.pth).")
    Path(store).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=store))
    try:
        gen_name = _file_name(generator)
        suffix = "".join(Path(gen_name).suffixes[-1:]) or ".pkl"
        gen_file = staging / f"generator{suffix}"
        fetch_to(generator, gen_file)
        gen_entry = {"file": gen_file.name, "sha256": _check_sha(gen_file, generator_sha256, "generator"),
                     "source": generator}
        if suffix == ".safetensors":
            config_source = generator[: -len(".safetensors")] + ".json"
            config_file = staging / "generator.json"
            fetch_to(config_source, config_file)
            gen_entry.update(config_file=config_file.name, config_sha256=file_sha256(config_file))
        model = load_generator(gen_file)
        gen_entry["config"] = model.config.to_json_dict()

        lpips_entry: dict = {"net": lpips_net, "file": None, "sha256": None, "source": lpips_backbone}
        official = False
        if lpips_backbone is not None:
            backbone_name = _file_name(lpips_backbone)
            backbone_file = staging / backbone_name
            fetch_to(lpips_backbone, backbone_file)
            match = _TORCHVISION_NAME.match(backbone_name)
            if match is None and lpips_sha256 is None:
                raise ModelError(
                    f"{backbone_name} is not named like torchvision's release (e.g. vgg16-397923af.pth); "
                    "give its SHA-256 with --lpips-sha256."
                )
            sha = _check_sha(backbone_file, lpips_sha256, "LPIPS backbone")
            if match is not None and not sha.startswith(match.group(1)):
                raise ModelError(f"{backbone_name}'s SHA-256 {sha[:8]}… does not start with {match.group(1)} as its name says.")
            official = sha.startswith(OFFICIAL_BACKBONE_PREFIXES.get(lpips_net, "-"))
            lpips_entry.update(file=backbone_name, sha256=sha)
        metric = load_lpips(lpips_net, staging / lpips_entry["file"] if lpips_entry["file"] else None,
                            allow_random_backbone=lpips_backbone is None)
        lpips_entry["heads_sha256"] = metric.identity.heads_sha256
        lpips_entry["official_torchvision_release"] = official

        non_clinical = demo or not official
        manifest = {
            "format": MANIFEST_FORMAT, "name": name, "description": description,
            "created_at": utc_now().isoformat(timespec="seconds"),
            "non_clinical": non_clinical,
            "identity": bundle_identity(gen_entry["sha256"], lpips_net, lpips_entry["sha256"], lpips_entry["heads_sha256"]),
            "generator": gen_entry, "lpips": lpips_entry,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def make_demo_bundle(store: Path, name: str = DEMO_BUNDLE, resolution: int = 256, seed: int = 0) -> Path:
    """A deterministic random-weight bundle for demos and tests (non-clinical)."""
    from pipeline.models.stylegan2 import GeneratorConfig, build_generator, save_generator

    config = GeneratorConfig(z_dim=64, w_dim=64, img_resolution=resolution, mapping_layers=4,
                             channel_base=max(1024, resolution * 8), channel_max=64)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "generator.safetensors"
        save_generator(build_generator(config, seed=seed), path)
        return install_bundle(store, name, str(path), None, lpips_net="alex", demo=True,
                              description=f"Random weights (seed {seed}) at {resolution}²: demonstrations and tests only.")


def list_bundles(store: Path, verify: bool = False) -> list[BundleSummary]:
    summaries = []
    for folder in sorted(Path(store).glob("*/")):
        if not (folder / MANIFEST).is_file():
            continue
        manifest = read_manifest(folder)
        summaries.append(BundleSummary(
            name=manifest["name"], identity=manifest["identity"], non_clinical=manifest["non_clinical"],
            resolution=int(manifest["generator"]["config"]["img_resolution"]), lpips_net=manifest["lpips"]["net"],
            created_at=manifest["created_at"], problems=tuple(verify_bundle(folder)) if verify else (),
        ))
    return summaries


def bundle_path(store: Path, name: str) -> Path:
    folder = Path(store) / check_name(name)
    if not (folder / MANIFEST).is_file():
        raise ModelError(f"No model bundle named {name} is installed in {store}.")
    return folder


def open_bundle(store: Path, name: str, *, demo: bool, device: str) -> ModelBundle:
    """The bundle every appraising command uses, loaded on ``device``: with ``demo`` the demo
    bundle (made in ``store`` when missing), else the installed bundle ``name``."""
    if demo:
        if not (Path(store) / DEMO_BUNDLE / MANIFEST).is_file():
            make_demo_bundle(store)
        return load_bundle(Path(store) / DEMO_BUNDLE, device=device)
    try:
        folder = bundle_path(store, name)
    except ModelError:
        raise ModelError(
            f"No clinical model bundle named {name!r} is installed in {store}. Install one with "
            "`cleftscore models install --generator ffhq.pkl --lpips-backbone vgg16-397923af.pth --name "
            f"{name}`, or use --demo for a demonstration (non-clinical)."
        ) from None
    return load_bundle(folder, device=device)
