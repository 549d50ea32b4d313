"""Launch-time facts shared by the Triton kernels: interpreter mode, device size, dot precision,
and the packing of crop indices into one integer argument."""
from __future__ import annotations

import functools
import os

import torch

LOG2E = 1.4426950408889634  # kernels work in base 2: exp(x) = exp2(x·log2 e)
MAX_PACKED_CROPS = 7  # 8 bits per crop index in a signed 64-bit integer


# Read once: @triton.jit reads the variable when the kernel modules are imported, so it must be
# set before swav_kernels is imported (tests/conftest.py does).
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return _INTERPRETING


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """How many programs a launch should offer to keep the device busy (2 waves of SMs).

    The interpreter runs programs one after another, so there it asks for a handful: enough
    that split reductions are exercised by small test shapes, few enough to stay fast.
    """
    if device.type != "cuda":
        return 4
    return 2 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision. fp32 operands honour ``torch.backends.cuda.matmul.allow_tf32``
    as ``torch.mm`` does: TF32 when allowed, else 3×TF32 (``tf32x3``: fp32-accurate products on
    tensor cores). 16-bit operands always run on tensor cores with fp32 accumulation."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "tf32x3"
    return "tf32"


def pack_crops(crops) -> int:
    """Crop indices as one integer kernel argument: 8 bits per crop, crop g in bits 8g…8g+7.
    The identity (crop g for every g, any count) packs as −1, which the kernels read as such."""
    crops = tuple(int(c) for c in crops)
    if crops == tuple(range(len(crops))):
        return -1
    if not crops_fit(crops):
        raise ValueError(f"the Triton kernels take at most {MAX_PACKED_CROPS} assign crops with indices "
                         f"below 256, got {crops}")
    packed = 0
    for g, crop in enumerate(crops):
        packed |= int(crop) << (8 * g)
    return packed


def crops_fit(crops) -> bool:
    """Whether ``crops`` packs into one argument (or is the identity, which always does)."""
    crops = tuple(int(c) for c in crops)
    return crops == tuple(range(len(crops))) or (
        len(crops) <= MAX_PACKED_CROPS and all(0 <= c < 256 for c in crops))


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
