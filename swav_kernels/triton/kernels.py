"""``TritonKernels``: the kernel contract (swav_kernels.kernels) implemented with Triton.

Checks every tensor before a launch (device, dtype, contiguity, shapes) so that bad input
raises a TypeError/ValueError naming the argument instead of faulting inside a kernel.
"""
from __future__ import annotations

import importlib.util

import torch

from ..kernel_checks import KERNEL_DTYPES, check_input, check_shape
from ..validation import check_same_dtype
from .launch import interpreting

class TritonKernels:
    """Triton implementation of ``swav_kernels.kernels.Kernels``."""

    name = "triton"

    @staticmethod
    def _input(name: str, value, ndim: int, dtype: torch.dtype | None = None, like=None) -> torch.Tensor:
        """A contiguous fp32/fp16/bf16 (or ``dtype``) tensor on the device the kernels run on."""
        device_type = "cpu" if interpreting() else "cuda"
        return check_input(name, value, ndim, dtype, like, device_type=device_type, kernels="Triton")

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

        self._input("x", x, 3)
        return sinkhorn.column_init(x, inv_eps)

    def sinkhorn_row_step(self, x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums,
                          codes_from_row):
        from . import sinkhorn

        self._input("x", x, 3)
        self._input("col_potential", col_potential, 2, torch.float32, like=x)
        check_shape("col_potential", col_potential, (x.shape[0], x.shape[2]))
        if not -1 <= codes_from_row < x.shape[1]:
            raise ValueError(f"codes_from_row must be -1 or a row index below {x.shape[1]}, got {codes_from_row}")
        return sinkhorn.row_step(x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums,
                                 codes_from_row)

    def scores_logsumexp(self, z, c, inv_tau, with_output):
        from . import scoring

        self._input("z", z, 2)
        self._input("c", c, 2, like=z)
        check_same_dtype("c", c, "z", z)
        if c.shape[1] != z.shape[1]:
            raise ValueError(f"c must have shape (K, D={z.shape[1]}), got {tuple(c.shape)}")
        return scoring.scores_logsumexp(z, c, inv_tau, with_output)

    def softmax_prototype_grad(self, z, c, lse, row_weight, inv_tau):
        from . import scoring

        self._input("z", z, 2)
        self._input("c", c, 2, like=z)
        check_same_dtype("c", c, "z", z)
        self._input("lse", lse, 1, torch.float32, like=z)
        self._input("row_weight", row_weight, 1, torch.float32, like=z)
        check_shape("lse", lse, (z.shape[0],))
        check_shape("row_weight", row_weight, (z.shape[0],))
        return scoring.softmax_prototype_grad(z, c, lse, row_weight, inv_tau)

    def _check_scores_codes(self, s, codes, crops_for_assign):
        self._input("s", s, 2)
        self._input("codes", codes, 3, torch.float32, like=s)
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
            self._input(name, tensor, 1, torch.float32, like=s)
            check_shape(name, tensor, (s.shape[0],))
        if scale.numel() != 1 or scale.dtype != torch.float32 or scale.device != s.device:
            raise ValueError(f"scale must be a one-element float32 tensor on {s.device}")
        return cross_entropy.cross_entropy_backward(s, codes, lse, row_weight, crops_for_assign, inv_tau, scale)
