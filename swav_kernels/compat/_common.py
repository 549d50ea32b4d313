"""What the trainer adapters share: the process group the trainers reduce over, the
swapped-prediction loss against codes a trainer computed itself, and the dtype rules."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from ..backend import LossSpec
from ..registry import resolve_backend
from ..validation import (
    check_crops_for_assign,
    check_finite,
    check_n_crops,
    check_positive_float,
    check_same_device,
    check_tensor,
)


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


def swapped_prediction_loss(
    scores: torch.Tensor | Sequence[torch.Tensor],
    codes: torch.Tensor,
    crops_for_assign: Sequence[int],
    temperature: float,
    backend: str = "auto",
) -> torch.Tensor:
    """DESIGN §1's loss for codes computed elsewhere.

    Args:
        scores: crop-major ``(V·B, K)`` scores or V per-crop ``(B, K)`` scores (gradients
            flow into them).
        codes: ``(|A|, B, K)`` codes of the assign crops, constants.
        crops_for_assign: the assign crops A, indices into the V crops.

    Returns:
        0-d loss, float32 for 16-bit scores, else the scores' dtype.
    """
    check_tensor("codes", codes, 3)
    if isinstance(scores, torch.Tensor):
        rows = check_tensor("scores", scores, 2)
    else:
        parts = [check_tensor(f"scores[{v}]", s, 2) for v, s in enumerate(scores)]
        for v, part in enumerate(parts[1:], start=1):
            if part.shape != parts[0].shape or part.dtype != parts[0].dtype or part.device != parts[0].device:
                raise ValueError(
                    f"scores[{v}] is {tuple(part.shape)} {part.dtype} on {part.device} but scores[0] is "
                    f"{tuple(parts[0].shape)} {parts[0].dtype} on {parts[0].device}; every crop must match"
                )
        rows = torch.cat(parts)
    check_same_device("codes", codes, "scores", rows)
    batch = codes.shape[1]
    if batch == 0 or rows.shape[0] % batch or codes.shape[2] != rows.shape[1]:
        raise ValueError(
            f"scores {tuple(rows.shape)} must be V crops of the (B, K) shape of the codes {tuple(codes.shape[1:])}"
        )
    n_crops = check_n_crops(rows.shape[0] // batch)
    crops = check_crops_for_assign(tuple(crops_for_assign), n_crops)
    if codes.shape[0] != len(crops):
        raise ValueError(f"codes must hold one (B, K) block per assign crop ({len(crops)}), got {codes.shape[0]}")
    check_finite({"scores": rows, "codes": codes})
    spec = LossSpec(n_crops, crops, check_positive_float("temperature", temperature), epsilon=1.0,
                    sinkhorn_iterations=0)  # epsilon and iterations are not read by the loss
    impl = resolve_backend(backend, rows.device, rows.dtype)
    return impl.loss_from_scores(rows, codes.detach(), spec)
