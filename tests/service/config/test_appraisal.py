"""One way from the configuration to appraisal settings (every appraising command uses it)."""

from __future__ import annotations

import pytest
import torch

from pipeline.compare.heatmaps import ErosionOrder
from pipeline.normalize.schedules import NormalizationMode
from service.config.appraisal import BOTH_EROSION_ORDERS, resolve_device, settings_from
from service.config.settings import ConfigError, load_config


def test_settings_follow_the_configuration():
    config = load_config({"CLEFTSCORE_INVERSION_STEPS": "7", "CLEFTSCORE_ADAPTATION_STEPS": "3",
                          "CLEFTSCORE_MODE": "fast", "CLEFTSCORE_DEVICE": "cpu"})
    settings = settings_from(config)
    assert (settings.inversion.steps, settings.adaptation.steps, settings.device) == (7, 3, "cpu")
    assert settings.mode is NormalizationMode.FAST and settings.to_dict()["mode"] == "fast"
    assert settings.erosion_orders == (ErosionOrder.DIFF_THEN_ERODE,) and settings.lpips_heatmaps
    chosen = settings_from(config, erosion_orders=BOTH_EROSION_ORDERS, lpips_heatmaps=False)
    assert chosen.erosion_orders == BOTH_EROSION_ORDERS and not chosen.lpips_heatmaps
    assert settings_from(load_config({})).mode is NormalizationMode.PAPER


def test_repeats_reach_the_appraisal_settings():
    assert settings_from(load_config({"CLEFTSCORE_DEVICE": "cpu"})).repeats == 1  # the paper's single run
    settings = settings_from(load_config({"CLEFTSCORE_REPEATS": "3", "CLEFTSCORE_DEVICE": "cpu"}))
    assert settings.repeats == 3 and settings.to_dict()["repeats"] == 3


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_absent_cuda_is_refused_in_one_line():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"^CLEFTSCORE_DEVICE \(or --device\): '{device}' was asked for but no CUDA"):
            resolve_device(device)
