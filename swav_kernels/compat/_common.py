"""What the trainer adapters share: the process group the trainers reduce over, the
dtype rules, the optional check for non-finite inputs, and argument checks whose errors name
each argument as the trainer's caller wrote it (``preds[2]``, ``num_iters``), not as the core
API calls it (``inputs``, ``iterations``)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from ..validation import check_finite, check_same_device, check_same_dtype, check_tensor


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


def check_inputs_finite(enabled: bool,
                        inputs: Mapping[str, Optional[Union[torch.Tensor, Sequence[torch.Tensor]]]]) -> None:
    """With ``enabled``: ValueError naming the first input that holds NaN or ±inf (a list's
    entries are named ``name[i]``; None is skipped), one host sync for all of them.

    The adapters' default (``check_finite_inputs=False``) does nothing here and lets
    non-finite inputs propagate to a non-finite result, as the trainers' own losses do."""
    if not enabled:
        return
    named = {}
    for name, value in inputs.items():
        if value is None:
            continue
        if isinstance(value, torch.Tensor):
            named[name] = value
        else:
            named.update((f"{name}[{i}]", tensor) for i, tensor in enumerate(value))
    check_finite(named)


def named_entries(name: str, value) -> list[tuple[str, object]]:
    """``[("name[0]", value[0]), …]`` for a list or tuple (or a tensor, indexed along its first
    dimension as the trainers index it); TypeError naming ``name`` for anything else."""
    if isinstance(value, (list, tuple)) or (isinstance(value, torch.Tensor) and value.dim() > 0):
        return [(f"{name}[{index}]", entry) for index, entry in enumerate(value)]
    raise TypeError(f"{name} must be a list of 2-D tensors, got {type(value).__name__}")


def check_views(named: Sequence[tuple[str, object]]) -> torch.Tensor:
    """Per-view scores: each a 2-D floating tensor with the first one's shape ``(B >= 1, K >= 1)``,
    device and dtype; errors use the names given. Returns the first tensor."""
    first_name, first = named[0]
    check_tensor(first_name, first, 2)
    if first.shape[0] == 0 or first.shape[1] == 0:
        raise ValueError(f"{first_name} must have at least one row and one column, got shape {tuple(first.shape)}")
    for name, tensor in named[1:]:
        check_tensor(name, tensor, 2)
        check_same_device(name, tensor, first_name, first)
        check_same_dtype(name, tensor, first_name, first)
        if tensor.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but {first_name} has {tuple(first.shape)}; "
                             "every view must have the same (B, K) shape")
    return first


def check_scores(name: str, value) -> torch.Tensor:
    """A 2-D floating tensor with at least one row and one column (a Sinkhorn's scores)."""
    check_tensor(name, value, 2)
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(value.shape)}")
    return value
