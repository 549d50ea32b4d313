"""Family 3: multi-crop swapped-prediction cross-entropy on given scores ``s (V·B, K)``.

Forward, one program per row r = v·B + b: the row's log-sum-exp of s/τ (computed once and
shared by every pair (i, v) with i ≠ v) and the cross term ``Σ_k s[r, k] · Σ_{a: A[a]≠v} q_a[b, k]``.
Backward, one program per (row, K tile): ``∂s = scale · (w softmax(s/τ) − Σ_{a: A[a]≠v} q_a[b])``
with w the row's code mass (n_v when code rows sum to 1).
The formulas are those of ``swav_kernels.kernels.Kernels``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import LOG2E, next_power_of_2


@triton.jit
def _other_codes(codes_ptr, assign_ptr, n_assign, crop, b, B, K, cols, col_mask):
    """Σ_{a: A[a] ≠ crop} codes[a, b, cols]."""
    total = tl.zeros(cols.shape, tl.float32)
    for a in range(n_assign):
        keep = (tl.load(assign_ptr + a) != crop).to(tl.float32)
        q = tl.load(codes_ptr + (a * B + b).to(tl.int64) * K + cols, mask=col_mask, other=0.0)
        total += keep * q
    return total


@triton.jit
def _forward_kernel(
    s_ptr, codes_ptr, assign_ptr, lse_ptr, cross_ptr,
    B, K, n_assign, scale_log2,
    BLOCK_K: tl.constexpr,
):
    r = tl.program_id(0)
    crop = r // B
    b = r % B
    row = s_ptr + r.to(tl.int64) * K
    row_max = float("-inf")
    row_sum = 0.0
    cross = 0.0
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        s = tl.load(row + cols, mask=col_mask, other=0.0).to(tl.float32)
        t = tl.where(col_mask, s * scale_log2, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(t, axis=0))  # finite: every tile has a valid column
        row_sum = row_sum * tl.exp2(row_max - new_max) + tl.sum(tl.exp2(t - new_max), axis=0)
        row_max = new_max
        others = _other_codes(codes_ptr, assign_ptr, n_assign, crop, b, B, K, cols, col_mask)
        cross += tl.sum(s * others, axis=0)
    tl.store(lse_ptr + r, (row_max + tl.log2(row_sum)) * 0.6931471805599453)
    tl.store(cross_ptr + r, cross)


@triton.jit
def _backward_kernel(
    s_ptr, codes_ptr, assign_ptr, lse_ptr, weight_ptr, scale_ptr, grad_ptr,
    B, K, n_assign, scale_log2,
    BLOCK_K: tl.constexpr,
):
    r = tl.program_id(0)
    pid_k = tl.program_id(1)
    crop = r // B
    b = r % B
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_mask = cols < K
    offsets = r.to(tl.int64) * K + cols
    s = tl.load(s_ptr + offsets, mask=col_mask, other=0.0).to(tl.float32)
    softmax = tl.exp2(tl.where(col_mask, s * scale_log2, float("-inf")) - tl.load(lse_ptr + r) * 1.4426950408889634)
    others = _other_codes(codes_ptr, assign_ptr, n_assign, crop, b, B, K, cols, col_mask)
    grad = tl.load(scale_ptr) * (tl.load(weight_ptr + r) * softmax - others)
    tl.store(grad_ptr + offsets, grad.to(grad_ptr.dtype.element_ty), mask=col_mask)


def _assign_tensor(crops_for_assign, device) -> torch.Tensor:
    return torch.tensor(list(crops_for_assign), dtype=torch.int32, device=device)


def cross_entropy_forward(s: torch.Tensor, codes: torch.Tensor, crops_for_assign, inv_tau: float
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lse, cross)``, each (V·B,) float32, of scores ``s (V·B, K)`` and ``codes (|A|, B, K)``."""
    rows, prototypes = s.shape
    lse = torch.empty(rows, device=s.device, dtype=torch.float32)
    cross = torch.empty_like(lse)
    block_k = min(1024, max(16, next_power_of_2(prototypes)))
    _forward_kernel[(rows,)](
        s, codes, _assign_tensor(crops_for_assign, s.device), lse, cross,
        codes.shape[1], prototypes, codes.shape[0], inv_tau * LOG2E, BLOCK_K=block_k, num_warps=4,
    )
    return lse, cross


def cross_entropy_backward(s: torch.Tensor, codes: torch.Tensor, lse: torch.Tensor, row_weight: torch.Tensor,
                           crops_for_assign, inv_tau: float, scale: torch.Tensor) -> torch.Tensor:
    """``∂s (V·B, K)`` in the dtype of ``s``; ``row_weight (V·B,)`` float32 code masses, ``scale``
    a 0-d float32 tensor."""
    rows, prototypes = s.shape
    grad = torch.empty_like(s)
    block_k = min(1024, max(16, next_power_of_2(prototypes)))
    _backward_kernel[(rows, triton.cdiv(prototypes, block_k))](
        s, codes, _assign_tensor(crops_for_assign, s.device), lse, row_weight, scale.reshape(1), grad,
        codes.shape[1], prototypes, codes.shape[0], inv_tau * LOG2E, BLOCK_K=block_k, num_warps=4,
    )
    return grad
