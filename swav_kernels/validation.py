"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong
shape, range or value) with a message that names the argument and what was expected, so
that bad input never reaches a kernel.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


_is_compiling = torch.compiler.is_compiling  # True while torch.compile traces the caller

# torch.backends.cuda.matmul.allow_tf32 is read through a module __getattr__ that first raises and
# catches an AttributeError (≈ 1 µs); the function behind it is read directly where there is one.
_get_allow_tf32 = getattr(torch._C, "_get_cublas_allow_tf32", None)


def tf32_allowed() -> bool:
    """``torch.backends.cuda.matmul.allow_tf32``: whether fp32 matmuls may use TF32 tensor cores."""
    return _get_allow_tf32() if _get_allow_tf32 is not None else torch.backends.cuda.matmul.allow_tf32


def check_tensor(name: str, value, ndim: int | Sequence[int]) -> torch.Tensor:
    """A floating tensor with one of the allowed ranks."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}"
        )
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if value.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    return value


def check_same_device(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if value.device != other.device:
        raise ValueError(
            f"{name} is on {value.device} but {other_name} is on {other.device}; "
            "they must be on the same device"
        )


def check_same_dtype(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if value.dtype != other.dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype} but {other_name} has dtype {other.dtype}; "
            "they must match"
        )


def check_finite(named_tensors: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first tensor that holds NaN or ±inf.

    One device→host sync for all tensors together; skipped while ``torch.compile`` traces.
    """
    if _is_compiling() or not named_tensors:
        return
    flags = torch.stack([torch.isfinite(t).all() for t in named_tensors.values()])
    if bool(flags.all()):
        return
    for (name, _), ok in zip(named_tensors.items(), flags.tolist()):
        if not ok:
            raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")


def check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_iterations(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_n_crops(nmb_crops, name: str = "nmb_crops") -> int:
    """``nmb_crops`` as an int V (total crops) or a list of crop counts per resolution; errors
    call it ``name``."""
    if isinstance(nmb_crops, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got bool")
    if isinstance(nmb_crops, numbers.Integral):
        counts = [int(nmb_crops)]
    elif isinstance(nmb_crops, Sequence) and not isinstance(nmb_crops, str):
        if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in nmb_crops):
            raise TypeError(f"{name} must hold ints, got {list(nmb_crops)!r}")
        counts = [int(c) for c in nmb_crops]
    else:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {type(nmb_crops).__name__}")
    if not counts or any(c < 0 for c in counts):
        raise ValueError(f"{name} must hold non-negative crop counts, got {nmb_crops!r}")
    total = sum(counts)
    if total < 2:
        raise ValueError(
            f"{name} must add up to at least 2 crops (the loss predicts one crop from another), got {nmb_crops!r}"
        )
    return total


def check_crops_for_assign(crops_for_assign, n_crops: int, name: str = "crops_for_assign") -> tuple[int, ...]:
    """Distinct crop indices in ``[0, n_crops)``; errors call the argument ``name``."""
    if isinstance(crops_for_assign, numbers.Integral) and not isinstance(crops_for_assign, bool):
        crops_for_assign = (int(crops_for_assign),)
    if not isinstance(crops_for_assign, Sequence) or isinstance(crops_for_assign, str):
        raise TypeError(
            f"{name} must be a sequence of crop indices, got {type(crops_for_assign).__name__}"
        )
    if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in crops_for_assign):
        raise TypeError(f"{name} must hold ints, got {list(crops_for_assign)!r}")
    crops = tuple(int(c) for c in crops_for_assign)
    if not crops:
        raise ValueError(f"{name} must name at least one crop")
    if len(set(crops)) != len(crops):
        raise ValueError(f"{name} must not repeat a crop, got {crops}")
    bad = [c for c in crops if not 0 <= c < n_crops]
    if bad:
        raise ValueError(
            f"{name} holds {bad}, outside the {n_crops} crops (valid indices 0..{n_crops - 1})"
        )
    return crops
