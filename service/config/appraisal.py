"""The appraisal settings of every command that appraises (serve, score, evaluate, simulate,
calibrate), built from the one configuration in one place, so a setting such as
``CLEFTSCORE_MODE=fast`` means the same everywhere.

Command-line options (``--steps``, ``--adapt-steps``, ``--device``) reach these settings as
overrides of :func:`~service.config.settings.load_config`, validated with the rest.
"""

from __future__ import annotations

import torch

from pipeline.appraise import AppraisalSettings
from pipeline.compare.heatmaps import ErosionOrder
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from pipeline.normalize.schedules import NormalizationMode
from service.config.settings import PREFIX, ConfigError, ServiceConfig

#: Both erosion orders, the journal's first (the evaluation scores both).
BOTH_EROSION_ORDERS = (ErosionOrder.DIFF_THEN_ERODE, ErosionOrder.ERODE_THEN_DIFF)


def resolve_device(requested: str) -> str:
    """The torch device for a configured one: ``auto`` is ``cuda`` when a CUDA device is
    present, else ``cpu``; ``cuda``/``cuda:N`` must exist (ConfigError otherwise)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{PREFIX}DEVICE (or --device): {requested!r} was asked for but no CUDA device "
                              "is available")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{PREFIX}DEVICE (or --device): {requested!r} was asked for but there are only "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return requested


def settings_from(config: ServiceConfig, *, erosion_orders: tuple[ErosionOrder, ...] = (ErosionOrder.DIFF_THEN_ERODE,),
                  lpips_heatmaps: bool = True) -> AppraisalSettings:
    """The appraisal settings for ``config`` (steps, repeats, mode and device; the device resolved).

    ``erosion_orders`` and ``lpips_heatmaps`` are the command's own choices (the evaluation
    scores both orders; ``score --no-lpips-heatmaps`` skips the LPIPS maps).
    """
    return AppraisalSettings(
        inversion=InversionSettings(steps=config.inversion_steps),
        adaptation=AdaptationSettings(steps=config.adaptation_steps),
        erosion_orders=tuple(erosion_orders),
        lpips_heatmaps=lpips_heatmaps,
        device=resolve_device(config.device),
        mode=NormalizationMode(config.mode),
        repeats=config.repeats,
    )
