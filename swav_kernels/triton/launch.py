"""Launch-time facts shared by the Triton kernels: interpreter mode, parallelism, dot precision."""
from __future__ import annotations

import os

import torch

LOG2E = 1.4426950408889634  # kernels work in base 2: exp(x) = exp2(x·log2 e)
LN2 = 0.6931471805599453


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def target_programs(device: torch.device) -> int:
    """How many programs a launch should offer to keep the device busy (2 waves of SMs).

    The interpreter runs programs one after another, so there it asks for a handful: enough
    that split reductions are exercised by small test shapes, few enough to stay fast.
    """
    if device.type != "cuda":
        return 4
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 operands honour ``torch.backends.cuda.matmul.allow_tf32``
    as ``torch.mm`` does; 16-bit operands always use tensor cores with fp32 accumulation."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
