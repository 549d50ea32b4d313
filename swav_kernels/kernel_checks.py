"""Tensor and argument checks shared by the Triton and CUDA kernel wrappers.

Every check runs before a launch and raises TypeError (wrong kind of object or dtype) or
ValueError (wrong shape, layout or device) naming the argument, so a bad call never
reaches a kernel.
"""
from __future__ import annotations

import math
import numbers

import torch

KERNEL_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def check_input(name: str, value, ndim: int, dtype: torch.dtype | None = None, like: torch.Tensor | None = None,
                device_type: str = "cuda", kernels: str = "CUDA"):
    """A contiguous tensor on a ``device_type`` device, of rank ``ndim``, of ``dtype``
    (default: any kernel dtype), on the device of ``like`` when given; ``kernels`` names the
    kernel family in the messages."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dtype is None and value.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the {kernels} kernels, got {value.dtype}")
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
