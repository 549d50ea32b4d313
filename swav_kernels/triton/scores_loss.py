"""Loss from given scores ``s (M, K)`` (``Kernels.scores_loss`` and its backward): the multi-crop
swapped-prediction cross-entropy.

Forward, one program per block of rows: each row's log-sum-exp of s/τ (computed once and shared
by every pair (i, v) with i ≠ v), the code mass it predicts w and the cross term
``Σ_k s·Σ_{a: A[a]≠v} q_a[b, k]``, folded into the rows' share of the loss (divided by denom, plus
``Σ 0·s + Σ 0·q``); the last program to finish adds the shares in order (``tickets.py``). Backward, one program per (block of rows,
block of prototypes): ``∂s = coef · (w·softmax(s/τ) − Σ_{a: A[a]≠v} q_a[b])``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import LOG2E, alignment_of, next_power_of_2, pack_crops
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LN2, DEVICE_LOG2E, predicted_codes
from .tickets import last_to_arrive

BLOCK_ROWS = 4


def _block_k(prototypes: int) -> int:
    return min(256, max(16, next_power_of_2(prototypes)))


@triton.jit
def _scores_loss_kernel(
    s_ptr, codes_ptr, M, K_UNITS, B, n_assign, crops_packed,
    lse_ptr, weight_ptr, share_ptr, loss_ptr, counter_ptr, scale_log2, inv_tau, inv_denom,
    K_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    inv_tau = tl.cast(inv_tau, tl.float32)
    inv_denom = tl.cast(inv_denom, tl.float32)
    # share: each program's share of the loss; the last program to finish adds them in order (tickets.py)
    K = K_UNITS * K_ALIGN  # prototypes, a multiple of K_ALIGN as the compiler sees: vector loads
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < M
    crop = rows // B
    b = rows % B
    row_max = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_R,), tl.float32)
    cross = tl.zeros((BLOCK_R,), tl.float32)
    weight = tl.zeros((BLOCK_R,), tl.float32)
    poison = tl.zeros((BLOCK_R,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        mask = row_mask[:, None] & col_mask[None, :]
        s = tl.load(s_ptr + rows[:, None].to(tl.int64) * K + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        t = tl.where(col_mask[None, :], s * scale_log2, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(t, axis=1))  # finite: every tile has a valid column
        row_sum = row_sum * tl.exp2(row_max - new_max) + tl.sum(tl.exp2(t - new_max[:, None]), axis=1)
        row_max = new_max
        q = predicted_codes(codes_ptr, crops_packed, n_assign, crop, b, B, K, cols, col_mask, row_mask)
        cross += tl.sum(s * q, axis=1)
        weight += tl.sum(q, axis=1)
        poison += tl.sum(s * 0.0 + q * 0.0, axis=1)
    lse = (row_max + tl.log2(row_sum)) * DEVICE_LN2
    tl.store(lse_ptr + rows, lse, mask=row_mask)
    tl.store(weight_ptr + rows, weight, mask=row_mask)
    terms = tl.where(row_mask, (weight * lse - inv_tau * cross + poison) * inv_denom, 0.0)
    tl.store(share_ptr + pid, tl.sum(terms, axis=0))
    if last_to_arrive(counter_ptr, programs):
        total = tl.zeros((), tl.float32)
        for i in range(programs):
            total += tl.load(share_ptr + i, cache_modifier=".cg")
        tl.store(loss_ptr, total)


@triton.jit
def _scores_grad_kernel(
    s_ptr, codes_ptr, M, K_UNITS, B, n_assign, crops_packed,
    lse_ptr, weight_ptr, grad_ptr, grad_s_ptr, scale_log2, coef_scale,
    K_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    coef_scale = tl.cast(coef_scale, tl.float32)
    K = K_UNITS * K_ALIGN
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_mask = rows < M
    col_mask = cols < K
    mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows[:, None].to(tl.int64) * K + cols[None, :]
    s = tl.load(s_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0) * DEVICE_LOG2E
    softmax = tl.exp2(s * scale_log2 - lse[:, None])
    weight = tl.load(weight_ptr + rows, mask=row_mask, other=0.0)
    q = predicted_codes(codes_ptr, crops_packed, n_assign, rows // B, rows % B, B, K, cols, col_mask, row_mask)
    coef = tl.load(grad_ptr) * coef_scale
    tl.store(grad_s_ptr + offsets, (coef * (weight[:, None] * softmax - q)).to(grad_s_ptr.dtype.element_ty),
             mask=mask)


def scores_loss_programs(rows: int) -> int:
    """Programs of the forward over ``rows`` score rows: its shares, and the tickets it needs (one)."""
    return triton.cdiv(rows, BLOCK_ROWS)


def prepare_scores_loss(rows: int, prototypes: int, n_assign: int, batch: int, crops, inv_tau: float, s, codes,
                        lse, weight, share, loss, counter) -> PreparedLaunch:
    """The forward over scores ``s`` (M, K) and ``codes`` (|A|, B, K) float32; out ``lse``, ``weight`` (M,),
    each program's ``share`` of the loss (``scores_loss_programs``,) and the 0-d ``loss``, float32;
    ``counter`` one int32 ticket, zero."""
    inv_denom = 1.0 / (n_assign * (rows // batch - 1) * batch)
    return PreparedLaunch(_scores_loss_kernel, (scores_loss_programs(rows),), (
        s, codes, rows, prototypes // alignment_of(prototypes), batch, n_assign, pack_crops(crops), lse, weight, share,
        loss, counter, inv_tau * LOG2E, inv_tau, inv_denom),
        dict(K_ALIGN=alignment_of(prototypes), BLOCK_R=BLOCK_ROWS, BLOCK_K=_block_k(prototypes), num_warps=4))


def prepare_scores_grad(rows: int, prototypes: int, n_assign: int, batch: int, crops, inv_tau: float, s, codes,
                        lse, weight, grad, grad_s) -> PreparedLaunch:
    """The backward: ``grad_s`` (M, K) in the dtype of s from the forward's ``lse`` and ``weight`` and
    the 0-d float32 upstream ``grad``."""
    block_k = _block_k(prototypes)
    coef_scale = inv_tau / (n_assign * (rows // batch - 1) * batch)
    return PreparedLaunch(_scores_grad_kernel, (triton.cdiv(rows, BLOCK_ROWS), triton.cdiv(prototypes, block_k)), (
        s, codes, rows, prototypes // alignment_of(prototypes), batch, n_assign, pack_crops(crops), lse, weight, grad,
        grad_s, inv_tau * LOG2E, coef_scale),
        dict(K_ALIGN=alignment_of(prototypes), BLOCK_R=BLOCK_ROWS, BLOCK_K=block_k, num_warps=4))


def scores_loss(s: torch.Tensor, codes: torch.Tensor, crops, inv_tau: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, lse (M,), weight (M,))`` of scores ``s (M, K)`` against ``codes (|A|, B, K)`` float32."""
    rows, prototypes = s.shape
    f32 = dict(device=s.device, dtype=torch.float32)
    lse = torch.empty(rows, **f32)
    weight = torch.empty(rows, **f32)
    share = torch.empty(scores_loss_programs(rows), **f32)
    loss = torch.empty((), **f32)
    counter = torch.zeros(1, device=s.device, dtype=torch.int32)
    launch = prepare_scores_loss(rows, prototypes, codes.shape[0], codes.shape[1], crops, inv_tau,
                                 *map(Buffer, range(7)))
    launch.run_tensors((s, codes, lse, weight, share, loss, counter))
    return loss, lse, weight


def scores_loss_backward(grad: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, crops, inv_tau: float,
                         lse: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``∂s (M, K)`` in the dtype of ``s``; ``grad`` a 0-d float32 tensor."""
    rows, prototypes = s.shape
    grad_s = torch.empty_like(s)
    launch = prepare_scores_grad(rows, prototypes, codes.shape[0], codes.shape[1], crops, inv_tau,
                                 *map(Buffer, range(6)))
    launch.run_tensors((s, codes, lse, weight, grad, grad_s))
    return grad_s
