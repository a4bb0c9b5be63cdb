"""Fixtures shared by the optimisation tests (inversion, adaptation, batches, performance).

Import them into a test module (``from tests.optimisation_fixtures import G, lpips_alex,
one_torch_thread``); ``one_torch_thread`` is autouse and so applies to every test of a
module that imports it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.perceptual import LpipsModel, load_lpips
from pipeline.stylegan2 import load_generator


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread is as fast idle and far faster on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def G(sg2_fixture_dir: Path) -> torch.nn.Module:
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


@pytest.fixture(scope="module")
def lpips_alex() -> LpipsModel:
    return load_lpips("alex", allow_random_backbone=True)
