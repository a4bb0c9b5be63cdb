"""Progress reports from the long-running optimisation stages.

A stage calls ``progress(Progress(...))`` once per completed optimisation step,
with ``step`` running 1, 2, ..., ``total``. The callback must be cheap; if it
raises, the stage stops and the exception propagates (this is how a caller
cancels a job).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One completed optimisation step of a named stage.

    Attributes:
        stage: which stage reports ("inversion", "adaptation").
        step: steps completed so far, 1..total.
        total: steps the stage will run.
        loss: the objective evaluated at this step (before its update).
    """

    stage: str
    step: int
    total: int
    loss: float


ProgressCallback = Callable[[Progress], None]
