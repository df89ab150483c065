"""The one way tools build their ``Accelerator`` from a config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from videovl.config import PRECISIONS, Config, not_one_of
from videovl.extras import require

__all__ = ["make_accelerator", "cpu_has_bf16", "resolve_precision"]

log = logging.getLogger(__name__)

# CPU flags (x86 /proc/cpuinfo, aarch64 "Features") of units that compute in bf16. Without them PyTorch
# emulates bf16 matmuls: a demo training step took 9x longer in bf16 than in fp32 on an AVX2-only CPU.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 arithmetic units, from ``/proc/cpuinfo`` (or the text given); False
    where that cannot be read (other systems), so ``auto`` falls back to fp32 there."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and _BF16_FLAGS & set(value.split()):
            return True
    return False


def resolve_precision(requested: str, cpu: bool) -> str:
    """Accelerate's mixed-precision name for ``train.mixed_precision``: ``auto`` is bf16 where the device
    computes in bf16 (a CUDA GPU that supports it, a CPU with bf16 units), else fp32 ("no"). An explicit
    bf16 on a CPU without bf16 units is kept, with a warning."""
    if requested not in PRECISIONS:
        raise not_one_of("train.mixed_precision", requested, PRECISIONS)
    on_cpu = cpu or not torch.cuda.is_available()
    if requested == "auto":
        if on_cpu:
            return "bf16" if cpu_has_bf16() else "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if requested == "bf16" and on_cpu and not cpu_has_bf16():
        log.warning(
            "train.mixed_precision is bf16 but this CPU has no bf16 units (no avx512_bf16 / amx_bf16 flag): "
            "PyTorch emulates them and a step can take several times longer than in fp32; "
            "train.mixed_precision=auto picks the faster one"
        )
    return requested


def make_accelerator(cfg: Config, cpu: bool = False) -> Accelerator:
    """The run's Accelerator. Precision comes from ``train.mixed_precision`` alone: passing it explicitly
    overrides ``accelerate launch --mixed_precision`` and Accelerate's config file, so one setting decides
    (the loop prints it with its source)."""
    # Several CPU processes only form a process group when Accelerate is told to use the CPU; without
    # it each process believes it is rank 0 and silently repeats the work.
    cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    if cfg.train.tracker == "tensorboard":  # Accelerate would drop a tracker it cannot import, silently
        require("tensorboard", "train.tracker: tensorboard", " (or train.tracker=null for no logs)")
    return Accelerator(
        cpu=cpu,
        mixed_precision=resolve_precision(cfg.train.mixed_precision, cpu),
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=cfg.train.tracker,
        project_dir=cfg.train.output_dir,
        # Image batches skip temporal attention and stages may freeze parts: not every parameter is used.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
