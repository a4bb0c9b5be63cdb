"""Fixtures of the normalisation tests (inversion, adaptation, schedules, engine):
the shared StyleGAN2-ADA fixture and LPIPS on a random AlexNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.stylegan2 import load_generator
from pipeline.normalize.perceptual import LpipsModel, load_lpips


@pytest.fixture(scope="module")
def G(sg2_fixture_dir: Path) -> torch.nn.Module:
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


@pytest.fixture(scope="module")
def lpips_alex() -> LpipsModel:
    return load_lpips("alex", allow_random_backbone=True)
