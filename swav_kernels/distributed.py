"""Collectives the Sinkhorn needs, and nothing when there is nothing to reduce.

DESIGN §1: the Sinkhorn total and per-prototype sums are summed over all ranks; the
per-sample sums stay local. With ``process_group=None`` (or a group of one rank) no
collective is ever called, so single-process code never needs ``torch.distributed``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed(process_group) -> bool:
    """True when ``process_group`` spans more than one rank and reductions must happen."""
    if process_group is None:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "process_group was given but torch.distributed is not initialized; "
            "call torch.distributed.init_process_group first or pass process_group=None"
        )
    return dist.get_world_size(process_group) > 1


def all_reduce_sum_(tensor: torch.Tensor, process_group) -> torch.Tensor:
    """In-place sum over ranks (no-op when not distributed); returns ``tensor``."""
    if is_distributed(process_group):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=process_group)
    return tensor


def all_reduce_max_(tensor: torch.Tensor, process_group) -> torch.Tensor:
    """In-place max over ranks (no-op when not distributed); returns ``tensor``."""
    if is_distributed(process_group):
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=process_group)
    return tensor


def global_row_count(local_rows: int, process_group, device, dtype) -> torch.Tensor:
    """Total number of Sinkhorn rows over all ranks, as a 0-d tensor.

    Ranks may hold different numbers of rows (DINOv2's iBOT patches), so the count is
    summed rather than taken as ``rows * world_size``.
    """
    count = torch.tensor(float(local_rows), device=device, dtype=dtype)
    return all_reduce_sum_(count, process_group)
