"""Fixtures of the generator tests: one torch thread (tiny tensors; oversubscribed threads on a busy
2-core machine cost far more than they give)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
