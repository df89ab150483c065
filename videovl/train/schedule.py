"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from videovl.config import StageConfig

__all__ = ["warmup_cosine", "StagedSchedule"]


def warmup_cosine(step: int, total: int, peak: float, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to ``peak * min_ratio``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class StagedSchedule:
    """The whole run's lr: each stage has its own warmup and cosine, restarting at the stage boundary.

    Used as ``LambdaLR(optimizer, StagedSchedule(stages))`` with every group's base lr set to 1.0, so the
    returned value is the lr itself (multiplied by a group's ``lr_scale``, if any, in the optimizer).
    """

    def __init__(self, stages: Sequence[StageConfig]):
        self.stages = list(stages)
        self.starts = [0]
        for s in self.stages:
            self.starts.append(self.starts[-1] + s.steps)

    def __call__(self, step: int) -> float:
        for stage, start, end in zip(self.stages, self.starts, self.starts[1:]):
            if step < end:
                return warmup_cosine(
                    step - start, stage.steps, stage.lr, stage.warmup_steps, stage.min_lr_ratio
                )
        last = self.stages[-1]
        return last.lr * last.min_lr_ratio
