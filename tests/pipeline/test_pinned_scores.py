"""Today's code against the pinned scores (tests/data/pinned_scores.json).

The JSON is written by ``python -m tests.pin_scores`` (its docstring keeps the file's history:
first pinned before the one-loop refactor of issue "1/7", which this test showed changed
nothing in paper mode; pinned again when the alignment started to follow the FFHQ recipe).
This test recomputes every case with one torch thread and asserts equality within float32
rounding (rel 1e-6, abs 1e-9): paper and fast mode on the demo bundle (two photos, both
erosion orders; every score, the losses, the normalised image's mean) and the shared
StyleGAN2-ADA fixture case (w statistics, losses, image sums). Measured on the 2-core x86-64
machine: bitwise equal. A change that moves any of them must say why and re-pin.

About 30 s on 2 cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests import pin_scores

PINNED = Path(__file__).resolve().parent.parent / "data" / "pinned_scores.json"
#: float32 rounding for values that are in fact reproduced bit for bit.
REL, ABS = 1e-6, 1e-9


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(PINNED.read_text())




@pytest.fixture(scope="module")
def demo(shared: Path, tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pin_scores, "SHARED", shared)
        return pin_scores.demo_cases(tmp_path_factory.mktemp("store"))


def _flat(value, path=""):
    """(path, value) for every number in a nested record; strings and None as they are."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flat(item, f"{path}[{index}]")
    else:
        yield path, value


def _pairs(got: dict, want: dict) -> list[tuple[str, object, object]]:
    got_flat, want_flat = dict(_flat(got)), dict(_flat(want))
    # Key order inside a score record changed (the vocabulary's canonical order); the set of values may not.
    assert sorted(got_flat) == sorted(want_flat), "the recomputed record has another layout than the pinned one"
    return [(path, got_flat[path], want_flat[path]) for path in want_flat]


def _assert_close(pairs, rel: float, abs_: float) -> float:
    worst = 0.0
    for path, got, want in pairs:
        if isinstance(want, float):
            assert math.isclose(got, want, rel_tol=rel, abs_tol=abs_), f"{path}: {got!r} != pinned {want!r}"
            worst = max(worst, abs(got - want))
        else:
            assert got == want, f"{path}: {got!r} != pinned {want!r}"
    return worst


@pytest.mark.parametrize("mode", ["paper", "fast"])
def test_demo_scores_are_unchanged(demo, pinned, mode):
    want = pinned["demo_64"]
    assert demo["bundle_identity"] == want["bundle_identity"]
    keys = [key for key in want if key.startswith(f"{mode}/")]
    assert len(keys) == len(pin_scores.PHOTOS)
    worst = _assert_close(_pairs({k: demo[k] for k in keys}, {k: want[k] for k in keys}), REL, ABS)
    print(f"\n{mode} mode: max |difference| {worst:.3g}")


def test_fixture_case_is_unchanged(pinned, shared):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pin_scores, "SHARED", shared)
        got = pin_scores.fixture_case()
    worst = _assert_close(_pairs(got, pinned["sg2ada_tiny32"]), REL, ABS)
    print(f"\nfixture case: max |difference| {worst:.3g}")
