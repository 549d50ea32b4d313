"""What the trainer adapters share: the process group the trainers reduce over, the
dtype rules and the optional check for non-finite inputs."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from ..validation import check_finite


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
