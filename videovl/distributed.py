"""The project's only collectives: rank, world size and two gathers, one with gradients and one without.

Why the gradient gather is exact. Every rank gathers the features of the whole (global) batch and computes
the *same* loss over it, but its autograd graph reaches only its own local features. The backward of
``torch.distributed.nn.functional.all_gather`` sums, over ranks, the gradient that each rank's copy of the
loss sends to a slice, so rank ``r``'s features receive ``world_size * dL/dx_r``; DDP (or Accelerate)
then averages parameter gradients over ranks, which leaves exactly the single-process gradient ``dL/dθ``.
The common shortcut -- gather without gradients and put the local slice back in -- lets each rank see only
its own copy, so after DDP's mean the features' share of the gradient is ``1 / world_size`` of the true one.
``tests/test_distributed_losses.py`` checks both claims on two CPU processes.

Both gathers accept different batch sizes per rank (the last batch of an epoch); they exchange sizes first,
pad to the largest and strip the padding, so the result is always the concatenation in rank order. With one
process (or no process group) they return their input unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor

__all__ = ["get_rank", "get_world_size", "process_position", "gather_with_grad", "gather_no_grad"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's index in the default group; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    """Number of processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if _initialized() else 1


def process_position(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)`` a loss computes for: the ones given (a test without a process group), or
    the process group's where None; a world size the group does not have is an error."""
    world_size = get_world_size() if world_size is None else world_size
    rank = get_rank() if rank is None else rank
    if world_size > 1 and get_world_size() != world_size:
        raise ValueError(
            f"world_size={world_size} but torch.distributed has {get_world_size()} processes; "
            "pass world_size=None to use the process group, or initialise it first"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is outside [0, world_size={world_size})")
    return rank, world_size


def _sizes(t: Tensor) -> list[int]:
    """Leading-dimension size of ``t`` on every rank."""
    local = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.empty_like(local) for _ in range(get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])])  # differentiable w.r.t. t


def gather_with_grad(t: Tensor) -> Tensor:
    """(B_r, ...) on each rank -> (sum_r B_r, ...) in rank order; the backward sums gradients over ranks."""
    if get_world_size() == 1:
        return t
    sizes = _sizes(t)
    parts = dist_fn.all_gather(_pad_rows(t, max(sizes)))  # autograd-aware; backward = reduce-scatter(sum)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


@torch.no_grad()
def gather_no_grad(t: Tensor) -> Tensor:
    """(B_r, ...) on each rank -> (sum_r B_r, ...) in rank order, detached (labels, hashes, eval outputs)."""
    if get_world_size() == 1:
        return t.detach()
    sizes = _sizes(t)
    padded = _pad_rows(t.detach(), max(sizes)).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
