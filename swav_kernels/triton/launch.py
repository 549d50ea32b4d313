"""Launch-time facts shared by the Triton kernels: interpreter mode, the device (its size, its
architecture, the stream to launch on), dot precision, and the packing of crop indices into one
integer argument."""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

from ..validation import tf32_allowed

LOG2E = 1.4426950408889634  # kernels work in base 2: exp(x) = exp2(x·log2 e)
MAX_PACKED_CROPS = 7  # 8 bits per crop index in a signed 64-bit integer


# Read once: @triton.jit reads the variable when the kernel modules are imported, so it must be
# set before swav_kernels is imported (tests/conftest.py does).
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return _INTERPRETING


class NullDevice(NamedTuple):
    """The device that CPU tensors stand for under ``swav_kernels.bench.null_driver`` (Triton's real
    launch path over a CUDA driver that does nothing): its compute capability (90 for sm_90) and size."""

    capability: int
    multiprocessors: int


_NULL_DEVICE: NullDevice | None = None


def use_null_device(device: NullDevice | None) -> None:
    """Treat CPU tensors as tensors of ``device`` (None: stop). Only the null driver calls this."""
    global _NULL_DEVICE
    _NULL_DEVICE = device


def null_device() -> NullDevice | None:
    return _NULL_DEVICE


def kernel_device_type() -> str:
    """The ``torch.device`` type of the tensors the kernels take: "cuda", or "cpu" under the
    interpreter or the null driver."""
    return "cpu" if _INTERPRETING or _NULL_DEVICE is not None else "cuda"


def device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def multiprocessors(device: torch.device) -> int | None:
    """Streaming multiprocessors of ``device``; None under the interpreter (no device)."""
    if device.type == "cuda":
        return _multiprocessors(device_index(device))
    return None if _NULL_DEVICE is None else _NULL_DEVICE.multiprocessors


def capability(device: torch.device) -> int:
    """Compute capability as 10·major + minor (90 for sm_90); the interpreter takes sm_90's rules."""
    if device.type == "cuda":
        return _capability(device_index(device))
    return 90 if _NULL_DEVICE is None else _NULL_DEVICE.capability


def target_programs(device: torch.device) -> int:
    """How many programs a launch should offer to keep the device busy (2 waves of SMs).

    The interpreter runs programs one after another, so there it asks for a handful: enough
    that split reductions are exercised by small test shapes, few enough to stay fast.
    """
    sms = multiprocessors(device)
    return 4 if sms is None else 2 * sms


def stream_getter(device: torch.device):
    """A function returning the raw stream a launch on ``device`` goes to (as ``stream_of``), for
    a plan to call at every run without looking at the device again."""
    if device.type == "cuda":
        return functools.partial(torch._C._cuda_getCurrentRawStream, device_index(device))
    return _null_stream


def _null_stream() -> int:
    return 0


def stream_of(device: torch.device) -> int:
    """The raw CUDA stream a launch on ``device`` goes to: PyTorch's current stream there, read at
    every call (it is per thread: autograd's backward threads run on the forward's stream); 0 (the
    null driver's only stream) for CPU tensors."""
    if device.type == "cuda":
        return torch._C._cuda_getCurrentRawStream(device_index(device))
    return 0


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision. fp32 operands honour ``torch.backends.cuda.matmul.allow_tf32``
    as ``torch.mm`` does: TF32 when allowed, else 3×TF32 (``tf32x3``: fp32-accurate products on
    tensor cores). 16-bit operands always run on tensor cores with fp32 accumulation."""
    if dtype == torch.float32 and not tf32_allowed():
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


def alignment_of(n: int, limit: int = 16) -> int:
    """The largest power of two up to ``limit`` that divides ``n`` (``limit`` for 0)."""
    n = int(n)
    return limit if n == 0 else min(limit, n & -n)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
