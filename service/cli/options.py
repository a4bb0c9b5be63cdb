"""Command-line options shared by the commands that appraise (score, evaluate, simulate, calibrate),
and the configuration they make: the options override the environment and the config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from service.config.settings import ServiceConfig, load_config

BundleOption = Annotated[str | None, typer.Option("--bundle", help="Installed model bundle (default: $CLEFTSCORE_BUNDLE).")]
DemoOption = Annotated[bool, typer.Option("--demo", help="Use the demo bundle (made if missing); outputs are labelled non-clinical.")]
StepsOption = Annotated[int | None, typer.Option("--steps", help="Inversion steps (default: $CLEFTSCORE_INVERSION_STEPS; paper: 2000).")]
AdaptOption = Annotated[int | None, typer.Option("--adapt-steps", help="Adaptation steps (default: $CLEFTSCORE_ADAPTATION_STEPS; paper: 50).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (default: $CLEFTSCORE_DEVICE).")]
StoreOption = Annotated[Path | None, typer.Option("--store", help="Model store (default: $CLEFTSCORE_DATA_DIR/models).")]

#: The command-line option behind each setting it overrides (named in error messages).
APPRAISAL_OPTIONS = {"bundle": "--bundle", "demo": "--demo", "inversion_steps": "--steps",
                     "adaptation_steps": "--adapt-steps", "device": "--device"}


def appraisal_config(*, bundle: str | None = None, demo: bool = False, steps: int | None = None,
                     adapt_steps: int | None = None, device: str | None = None) -> ServiceConfig:
    """The configuration from the environment (and config file) with the given options on top
    (``None``/``False``: not given, the configuration's value holds)."""
    overrides = {"bundle": bundle, "demo": True if demo else None, "inversion_steps": steps,
                 "adaptation_steps": adapt_steps, "device": device}
    return load_config(os.environ, overrides, options=APPRAISAL_OPTIONS)
