"""``cleftscore models …``: install, list, verify, make-demo and export model bundles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import ModelError

models_app = typer.Typer(help="Install, list and verify model bundles (generator + LPIPS weights).", no_args_is_help=True)

StoreOption = Annotated[Path | None, typer.Option("--store", help="Model store folder (default: $CLEFTSCORE_DATA_DIR/models).")]


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def default_store(store: Path | None) -> Path:
    if store is not None:
        return store
    from service.config.settings import load_config

    return load_config(os.environ).models_dir


@models_app.command("install")
def install_command(
    generator: Annotated[str, typer.Option("--generator", help="StyleGAN2 generator: path or URL (.pkl, .pt or .safetensors).")],
    lpips_backbone: Annotated[str, typer.Option("--lpips-backbone", help="torchvision ImageNet backbone: path or URL (vgg16-397923af.pth).")],
    name: Annotated[str, typer.Option("--name", help="Bundle name.")] = "default",
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 of the generator file.")] = None,
    lpips_sha256: Annotated[str | None, typer.Option("--lpips-sha256", help="Expected SHA-256 of the backbone file.")] = None,
    lpips_net: Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: vgg (the method's) or alex.")] = "vgg",
    description: Annotated[str, typer.Option("--description", help="Free text kept in the manifest.")] = "",
    store: StoreOption = None,
) -> None:
    """Copy model files into the store, verify their checksums and that they load strictly, and write a manifest."""
    from service.runtime.model_store import install_bundle

    folder = install_bundle(default_store(store), name, generator, lpips_backbone, lpips_net=lpips_net,
                            generator_sha256=sha256, lpips_sha256=lpips_sha256, description=description)
    _describe(folder)


@models_app.command("make-demo")
def make_demo_command(
    resolution: Annotated[int, typer.Option("--resolution", help="Generator resolution (power of two).")] = 256,
    name: Annotated[str, typer.Option("--name", help="Bundle name.")] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    store: StoreOption = None,
) -> None:
    """Make a deterministic random-weight bundle for demos and tests. Everything made with it is labelled non-clinical."""
    from service.runtime.model_store import make_demo_bundle

    folder = make_demo_bundle(default_store(store), name, resolution=resolution, seed=seed)
    _describe(folder)


@models_app.command("list")
def list_command(store: StoreOption = None) -> None:
    """List installed bundles with their identity."""
    from service.runtime.model_store import list_bundles

    bundles = list_bundles(default_store(store))
    if not bundles:
        typer.echo("No model bundles installed. Install one with: cleftscore models install --generator … --lpips-backbone …")
        return
    for item in bundles:
        label = "NON-CLINICAL" if item.non_clinical else "clinical"
        typer.echo(f"{item.name}\t{item.resolution}²\tlpips-{item.lpips_net}\t{label}\t{item.identity[:16]}\t{item.created_at}")


@models_app.command("verify")
def verify_command(
    name: Annotated[str | None, typer.Argument(help="Bundle to verify (default: all).")] = None,
    store: StoreOption = None,
) -> None:
    """Recompute every file's SHA-256 and compare it with the manifest; exit 2 on any difference."""
    from service.runtime.model_store import bundle_path, list_bundles

    root = default_store(store)
    names = [name] if name else [b.name for b in list_bundles(root)]
    failed = False
    for item in names:
        from pipeline.models.bundle import verify_bundle

        problems = verify_bundle(bundle_path(root, item))
        typer.echo(f"{item}: " + ("OK" if not problems else "; ".join(problems)))
        failed |= bool(problems)
    if failed:
        raise ModelError("At least one bundle failed verification.")


@models_app.command("export")
def export_command(
    generator: Annotated[Path, typer.Argument(help="Generator file to convert (.pkl or .pt).")],
    out: Annotated[Path, typer.Option("--out", help="Output path (X.safetensors; X.json is written beside it).")],
) -> None:
    """Convert a generator to our safetensors + JSON format (no pickle needed to load it)."""
    from pipeline.models.stylegan2 import load_generator, save_generator

    model = load_generator(generator)
    save_generator(model, out)
    typer.echo(f"{generator} → {out} ({model.img_resolution}², {model.num_ws} ws)")


def _describe(folder: Path) -> None:
    from pipeline.models.bundle import read_manifest

    manifest = read_manifest(folder)
    label = "NON-CLINICAL (demo/test weights)" if manifest["non_clinical"] else "clinical"
    config = manifest["generator"]["config"]
    typer.echo(f"Installed {manifest['name']} at {folder}: {config['img_resolution']}² generator, "
               f"LPIPS {manifest['lpips']['net']}, {label}, identity {manifest['identity'][:16]}…")
