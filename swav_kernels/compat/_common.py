"""What the trainer adapters share: the process group the trainers reduce over and the
dtype rules."""
from __future__ import annotations

import torch
import torch.distributed as dist


def default_process_group(process_group=None):
    """``process_group`` when given; else torch.distributed's default group when it is
    initialised (the trainers reduce over every rank), else None (this process only).

    A group of one rank makes no collective call (``swav_kernels.distributed``)."""
    if process_group is not None:
        return process_group
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def loss_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype of ``−Σ q · log_softmax(s/τ)`` written in plain PyTorch: the promoted dtype
    of the operands, float32 where autocast runs ``log_softmax`` in float32."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    if dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(tensors[0].device.type):
        return torch.float32
    return dtype
