"""Shared test fixtures: where the test data lives and real sample photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The project's shared/ folder: $CLEFTSCORE_SHARED, else ../shared beside the checkout."""
    env = os.environ.get("CLEFTSCORE_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set CLEFTSCORE_SHARED)")
    return path


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    return shared / "faces"


@pytest.fixture(scope="session")
def sg2_fixture_dir(shared: Path) -> Path:
    return shared / "fixtures" / "stylegan2-ada"


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
