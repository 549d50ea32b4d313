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


# ---- the arguments of the kernel contract (swav_kernels.kernels), checked the same way for
# every backend before any launch ------------------------------------------------------------

def _nonempty(name: str, value: torch.Tensor) -> None:
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")


def check_crops(crops, n_crops: int) -> tuple[int, ...]:
    """Distinct crop indices in [0, n_crops)."""
    crops = tuple(check_int("crops entry", c) for c in crops)
    if not crops or len(set(crops)) != len(crops) or any(not 0 <= c < n_crops for c in crops):
        raise ValueError(f"crops must list distinct crop indices in [0, {n_crops}), got {list(crops)}")
    return crops


def _layout(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device, type(t))


_VALID_ROWS: set = set()  # layouts of SinkhornRows already checked: the T Sinkhorn steps check once


def check_sinkhorn_rows(rows, device_type: str, kernels: str):
    """``SinkhornRows``: main (R, X), queue (G, L, X) or None, prototypes (K, D) or None, all of
    main's dtype and device; B ≥ 1 rows per crop, every crop a block of main. A layout that passed
    once (shapes, strides, dtypes, devices, crops) is not checked again."""
    key = (_layout(rows.main), _layout(rows.queue), _layout(rows.prototypes), rows.crops, rows.batch,
           device_type) if all(isinstance(t, torch.Tensor) or t is None
                               for t in (rows.main, rows.queue, rows.prototypes)) else None
    if key is not None and key in _VALID_ROWS:
        return rows
    _check_sinkhorn_rows(rows, device_type, kernels)
    if key is not None and len(_VALID_ROWS) < 4096:
        _VALID_ROWS.add(key)
    return rows


def _check_sinkhorn_rows(rows, device_type: str, kernels: str):
    main = check_input("rows.main", rows.main, 2, device_type=device_type, kernels=kernels)
    _nonempty("rows.main", main)
    batch = check_int("rows.batch", rows.batch)
    if batch < 1 or main.shape[0] % batch:
        raise ValueError(f"rows.batch must be >= 1 and divide the {main.shape[0]} rows of rows.main, got {batch}")
    crops = check_crops(rows.crops, main.shape[0] // batch)
    if rows.queue is not None:
        queue = check_input("rows.queue", rows.queue, 3, main.dtype, like=main, device_type=device_type,
                            kernels=kernels)
        check_shape("rows.queue", queue, (len(crops), queue.shape[1], main.shape[1]))
    if rows.prototypes is not None:
        prototypes = check_input("rows.prototypes", rows.prototypes, 2, main.dtype, like=main,
                                 device_type=device_type, kernels=kernels)
        _nonempty("rows.prototypes", prototypes)
        if prototypes.shape[1] != main.shape[1]:
            raise ValueError(f"rows.prototypes must have shape (K, D={main.shape[1]}), got {tuple(prototypes.shape)}")
    return rows


def check_row_stats(row_stats, rows) -> None:
    """None, or ``RowStats`` (R ≥ 1, G, N) float32 of ``rows``."""
    if row_stats is None:
        return
    for name, value in (("row_stats.max", row_stats.max), ("row_stats.sumexp", row_stats.sumexp)):
        check_input(name, value, 3, torch.float32, like=rows.main, device_type=rows.main.device.type)
        check_shape(name, value, (row_stats.max.shape[0], rows.groups, rows.rows))
    if row_stats.max.shape[0] < 1:
        raise ValueError("row_stats must hold at least one partial (R >= 1)")


def check_column_stats(columns, rows) -> None:
    for name, value in (("columns.max", columns.max), ("columns.sumexp", columns.sumexp)):
        check_input(name, value, 3, torch.float32, like=rows.main, device_type=rows.main.device.type)
        check_shape(name, value, (columns.max.shape[0], rows.groups, rows.prototype_count))
    if columns.max.shape[0] < 1:
        raise ValueError("columns must hold at least one partial (S >= 1)")


def check_embeddings_and_prototypes(z, c, device_type: str, kernels: str):
    z = check_input("z", z, 2, device_type=device_type, kernels=kernels)
    c = check_input("c", c, 2, z.dtype, like=z, device_type=device_type, kernels=kernels)
    _nonempty("z", z)
    _nonempty("c", c)
    if c.shape[1] != z.shape[1]:
        raise ValueError(f"c must have shape (K, D={z.shape[1]}) to match z, got {tuple(c.shape)}")
    return z, c


def check_codes(name: str, codes, rows: int, prototypes: int, crops, like: torch.Tensor) -> tuple[int, ...]:
    """(|A|, B, K) float32 codes for ``rows`` = V·B loss rows; returns the checked crops."""
    check_input(name, codes, 3, torch.float32, like=like, device_type=like.device.type)
    _nonempty(name, codes)
    n_assign, batch, width = codes.shape
    if width != prototypes or rows % batch or rows // batch < 2:
        raise ValueError(f"{name} must have shape (|A|, B, K={prototypes}) with B dividing the {rows} rows into "
                         f"at least 2 crops, got {tuple(codes.shape)}")
    crops = check_crops(crops, rows // batch)
    if len(crops) != n_assign:
        raise ValueError(f"crops names {len(crops)} crops but {name} holds {n_assign}")
    return crops


def check_codes_bundle(codes, z: torch.Tensor, prototypes: int, crops) -> tuple[int, ...]:
    """``Codes`` of the fused path: codes (|A|, B, K), and S ≥ 1 partials of the mass (S, |A|, B) and of the
    projection (S, |A|, B, D), float32."""
    crops = check_codes("codes.codes", codes.codes, z.shape[0], prototypes, crops, z)
    n_assign, batch, _ = codes.codes.shape
    if codes.mass is None or codes.projected is None:
        raise ValueError("codes.mass and codes.projected are required on the fused path")
    check_input("codes.mass", codes.mass, 3, torch.float32, like=z, device_type=z.device.type)
    splits = codes.mass.shape[0]
    if splits < 1:
        raise ValueError("codes.mass must hold at least one partial (S >= 1)")
    check_shape("codes.mass", codes.mass, (splits, n_assign, batch))
    check_input("codes.projected", codes.projected, 4, torch.float32, like=z, device_type=z.device.type)
    check_shape("codes.projected", codes.projected, (splits, n_assign, batch, z.shape[1]))
    return crops


def check_loss_vector(name: str, value, rows: int, like: torch.Tensor) -> None:
    check_input(name, value, 1, torch.float32, like=like, device_type=like.device.type)
    check_shape(name, value, (rows,))


def check_grad_scalar(grad, like: torch.Tensor) -> None:
    if not isinstance(grad, torch.Tensor) or grad.numel() != 1 or grad.dtype != torch.float32:
        raise TypeError(f"grad must be a one-element float32 tensor, got {grad!r}")
    if grad.device != like.device:
        raise ValueError(f"grad is on {grad.device} but must be on {like.device}")
