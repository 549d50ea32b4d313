"""``TritonKernels``: the kernel contract (swav_kernels.kernels) implemented with Triton.

Checks every tensor before a launch (device, dtype, contiguity, shapes) so that bad input
raises a TypeError/ValueError naming the argument instead of faulting inside a kernel.
"""
from __future__ import annotations

import importlib.util

import torch

from .launch import interpreting

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(name: str, tensor: torch.Tensor, ndim: int, device: torch.device, dtypes=KERNEL_DTYPES) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {tensor.dtype}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(tensor.shape)}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, expected {device}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous (row-major), got strides {tensor.stride()}")


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def _check_same_dtype(name: str, tensor: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if tensor.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but {other_name} has {other.dtype}; they must match")


class TritonKernels:
    """Triton implementation of ``swav_kernels.kernels.Kernels``."""

    name = "triton"

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if dtype not in KERNEL_DTYPES:
            return f"the Triton kernels take float32, float16 or bfloat16, not {dtype}"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and interpreting():
            return None
        return f"Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), not on {device.type}"

    def sinkhorn_column_init(self, x, inv_eps):
        from . import sinkhorn

        _check("x", x, 3, x.device)
        return sinkhorn.column_init(x, inv_eps)

    def sinkhorn_row_step(self, x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums,
                          codes_from_row):
        from . import sinkhorn

        _check("x", x, 3, x.device)
        _check("col_potential", col_potential, 2, x.device, (torch.float32,))
        _check_shape("col_potential", col_potential, (x.shape[0], x.shape[2]))
        if not -1 <= codes_from_row < x.shape[1]:
            raise ValueError(f"codes_from_row must be -1 or a row index below {x.shape[1]}, got {codes_from_row}")
        return sinkhorn.row_step(x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums,
                                 codes_from_row)

    def scores_logsumexp(self, z, c, inv_tau, with_output):
        from . import scoring

        _check("z", z, 2, z.device)
        _check("c", c, 2, z.device)
        _check_same_dtype("c", c, "z", z)
        if c.shape[1] != z.shape[1]:
            raise ValueError(f"c must have shape (K, D={z.shape[1]}), got {tuple(c.shape)}")
        return scoring.scores_logsumexp(z, c, inv_tau, with_output)

    def softmax_prototype_grad(self, z, c, lse, row_weight, inv_tau):
        from . import scoring

        _check("z", z, 2, z.device)
        _check("c", c, 2, z.device)
        _check_same_dtype("c", c, "z", z)
        _check("lse", lse, 1, z.device, (torch.float32,))
        _check("row_weight", row_weight, 1, z.device, (torch.float32,))
        _check_shape("lse", lse, (z.shape[0],))
        _check_shape("row_weight", row_weight, (z.shape[0],))
        return scoring.softmax_prototype_grad(z, c, lse, row_weight, inv_tau)

    def _check_scores_codes(self, s, codes, crops_for_assign):
        _check("s", s, 2, s.device)
        _check("codes", codes, 3, s.device, (torch.float32,))
        batch = codes.shape[1]
        if batch == 0 or s.shape[0] % batch or codes.shape[2] != s.shape[1]:
            raise ValueError(f"codes must have shape (|A|, B, K={s.shape[1]}) with B dividing the "
                             f"{s.shape[0]} rows of s, got {tuple(codes.shape)}")
        if len(crops_for_assign) != codes.shape[0]:
            raise ValueError(f"crops_for_assign names {len(crops_for_assign)} crops but codes has {codes.shape[0]}")

    def scores_cross_entropy_forward(self, s, codes, crops_for_assign, inv_tau):
        from . import cross_entropy

        self._check_scores_codes(s, codes, crops_for_assign)
        return cross_entropy.cross_entropy_forward(s, codes, crops_for_assign, inv_tau)

    def scores_cross_entropy_backward(self, s, codes, lse, row_weight, crops_for_assign, inv_tau, scale):
        from . import cross_entropy

        self._check_scores_codes(s, codes, crops_for_assign)
        for name, tensor in (("lse", lse), ("row_weight", row_weight)):
            _check(name, tensor, 1, s.device, (torch.float32,))
            _check_shape(name, tensor, (s.shape[0],))
        if scale.numel() != 1 or scale.dtype != torch.float32 or scale.device != s.device:
            raise ValueError(f"scale must be a one-element float32 tensor on {s.device}")
        return cross_entropy.cross_entropy_backward(s, codes, lse, row_weight, crops_for_assign, inv_tau, scale)
