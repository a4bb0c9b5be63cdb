"""Fixtures of every pipeline test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: the tensors here are tiny, so one thread is as fast idle and far faster on a
    busy 2-core machine, and reductions are split the same way as when the pinned scores were made."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
