"""The one way tools build their ``Accelerator`` from a config."""

from __future__ import annotations

import os

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from videovl.config import Config

__all__ = ["make_accelerator"]


def make_accelerator(cfg: Config, cpu: bool = False) -> Accelerator:
    # Several CPU processes only form a process group when Accelerate is told to use the CPU; without
    # it each process believes it is rank 0 and silently repeats the work.
    cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=cfg.train.tracker,
        project_dir=cfg.train.output_dir,
        # Image batches skip temporal attention and stages may freeze parts: not every parameter is used.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
