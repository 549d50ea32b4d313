"""Per-row log-sum-exp of ``scale · x`` on the GPU (csrc/rowwise/row_logsumexp.cu)."""
from __future__ import annotations

import torch

from ..validation import check_positive_float
from .extension import extension

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def row_logsumexp(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``log Σ_k exp(scale · x[r, k])`` for a CUDA tensor ``x (R, K)`` of fp32/fp16/bf16
    with unit column stride; returns ``(R,)`` float32 on the same device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cuda":
        raise ValueError(f"x must be a CUDA tensor, got device {x.device}")
    if x.dtype not in _DTYPE_NAMES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be 2-D with at least one column, got shape {tuple(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError(f"x must have unit column stride (x.stride(1) == 1), got strides {x.stride()}")
    scale = check_positive_float("scale", scale)
    out = torch.empty(x.shape[0], device=x.device, dtype=torch.float32)
    if x.shape[0]:
        with torch.cuda.device(x.device):
            extension().row_logsumexp(
                x.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], max(x.stride(0), x.shape[1]),
                _DTYPE_NAMES[x.dtype], scale, torch.cuda.current_stream(x.device).cuda_stream,
            )
    return out
