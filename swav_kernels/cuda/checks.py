"""Tensor checks and launch helpers shared by the CUDA kernel wrappers.

Every check runs before a launch and raises TypeError (wrong kind of object or dtype) or
ValueError (wrong shape, layout or device) naming the argument, so a bad call never
reaches the GPU.
"""
from __future__ import annotations

import functools
import math
import numbers

import torch

KERNEL_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def check_input(name: str, value, ndim: int, dtype: torch.dtype | None = None, like: torch.Tensor | None = None,
                device_type: str = "cuda"):
    """A contiguous tensor on a ``device_type`` device, of rank ``ndim``, of ``dtype``
    (default: any kernel dtype), on the device of ``like`` when given."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dtype is None and value.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the CUDA kernels, got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {value.dtype}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if not value.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {value.stride()}")
    if value.device.type != device_type:
        raise ValueError(f"{name} must be a {device_type.upper()} tensor, got device {value.device}")
    if like is not None and value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but must be on {like.device} like the other inputs")
    return value


def check_same_dtype(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if value.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {other_name} has {other.dtype}; they must match")


def check_shape(name: str, value: torch.Tensor, shape: tuple) -> None:
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")


def check_finite_float(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0.0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value}")
    return value


def check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def stream_handle(device: torch.device) -> int:
    """PyTorch's current CUDA stream on ``device``, as the integer handle the bindings take."""
    return torch.cuda.current_stream(device).cuda_stream


@functools.lru_cache(maxsize=None)
def multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def workspace(floats: int, device: torch.device) -> torch.Tensor:
    """A float32 scratch buffer of ``floats`` elements (from PyTorch's caching allocator)."""
    return torch.empty(max(int(floats), 0), device=device, dtype=torch.float32)
