"""Family 1: prototype scoring + temperature softmax, tile by tile (never storing Z Cᵀ).

``scores_logsumexp``: per row m, ``lse[m] = log Σ_k exp(z_m·c_k / τ)`` and optionally the
attention output ``out[m] = Σ_k softmax_k · c_k`` (flash-attention forward with Z as
queries, C as keys and values), split over K when there are too few row blocks to fill
the GPU (flash-decoding) and merged afterwards.

``softmax_prototype_grad``: ``g[k] = Σ_m w[m] · exp(z_m·c_k/τ − lse[m]) · z_m``, one program
per block of prototypes looping over rows (the flash-attention dV pass), split over rows
into partial sums added in a fixed order: deterministic, no atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import LN2, LOG2E, cdiv, dot_precision, next_power_of_2, target_programs


@triton.jit
def _scores_lse_kernel(
    z_ptr, c_ptr, max_ptr, sum_ptr, acc_ptr,
    M, K, D, scale_log2, k_per_split,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    WITH_OUTPUT: tl.constexpr, PRECISION: tl.constexpr,
):
    # Online softmax over this program's K range, in base 2: s = z·cᵀ · log2(e)/τ.
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    z = tl.load(z_ptr + rows[:, None] * D + dims[None, :], mask=(rows[:, None] < M) & (dims[None, :] < D), other=0.0)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        c = tl.load(c_ptr + cols[:, None] * D + dims[None, :], mask=(cols[:, None] < k_end) & (dims[None, :] < D),
                    other=0.0)
        s = tl.dot(z, tl.trans(c), input_precision=PRECISION) * scale_log2
        s = tl.where(cols[None, :] < k_end, s, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(s, axis=1))  # finite: every tile has a valid column
        rescale = tl.exp2(row_max - new_max)
        p = tl.exp2(s - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        if WITH_OUTPUT:
            acc = acc * rescale[:, None] + tl.dot(p.to(c.dtype), c, input_precision=PRECISION)
        row_max = new_max
    out_rows = split * M + rows
    tl.store(max_ptr + out_rows, row_max, mask=rows < M)
    tl.store(sum_ptr + out_rows, row_sum, mask=rows < M)
    if WITH_OUTPUT:
        tl.store(acc_ptr + out_rows[:, None] * D + dims[None, :], acc, mask=(rows[:, None] < M) & (dims[None, :] < D))


@triton.jit
def _prototype_grad_kernel(
    z_ptr, c_ptr, lse_ptr, weight_ptr, out_ptr,
    M, K, D, scale_log2, rows_per_split,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    # g[k] = Σ_m w[m] · exp2(z_m·c_k·log2(e)/τ − lse[m]·log2(e)) · z_m  over this program's rows.
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims[None, :] < D
    c = tl.load(c_ptr + cols[:, None] * D + dims[None, :], mask=(cols[:, None] < K) & dim_mask, other=0.0)
    m_begin = split * rows_per_split
    m_end = tl.minimum(m_begin + rows_per_split, M)
    acc = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    for m0 in range(m_begin, m_end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_mask = rows < m_end
        z = tl.load(z_ptr + rows[:, None] * D + dims[None, :], mask=row_mask[:, None] & dim_mask, other=0.0)
        lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0) * 1.4426950408889634
        weight = tl.load(weight_ptr + rows, mask=row_mask, other=0.0)
        s = tl.dot(z, tl.trans(c), input_precision=PRECISION) * scale_log2
        p = tl.exp2(s - lse[:, None]) * weight[:, None]  # masked rows have weight 0
        acc += tl.dot(tl.trans(p.to(z.dtype)), z, input_precision=PRECISION)
    out = out_ptr + split * K * D + cols[:, None] * D + dims[None, :]
    tl.store(out, acc, mask=(cols[:, None] < K) & dim_mask)


def _tiles(dim: int, element_size: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_K, BLOCK_D, num_warps) for embeddings of width ``dim`` and element size
    in bytes, sized so that the pipelined Z and C tiles fit an A100's shared memory."""
    block_d = max(16, next_power_of_2(dim))
    if block_d <= 64:
        return 64, 128, block_d, 4
    if block_d <= 128:
        return 64, 64, block_d, 4
    if element_size <= 2:
        return 64, 32, block_d, 8
    return 32, 32, block_d, 4


def scores_logsumexp(z: torch.Tensor, c: torch.Tensor, inv_tau: float, with_output: bool,
                     splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``lse (M,)`` and, if ``with_output``, ``out (M, D)`` (else ``(0, D)``), float32, of
    ``z (M, D)`` against ``c (K, D)``; see the module docstring. ``splits`` forces the number
    of K ranges (default: enough programs to fill the device)."""
    rows, dim = z.shape
    prototypes = c.shape[0]
    block_m, block_k, block_d, warps = _tiles(dim, z.element_size())
    row_blocks = cdiv(rows, block_m)
    k_blocks = cdiv(prototypes, block_k)
    if splits is None:
        splits = max(1, min(k_blocks, cdiv(target_programs(z.device), row_blocks)))
    k_per_split = cdiv(k_blocks, splits) * block_k
    splits = cdiv(prototypes, k_per_split)  # every split holds at least one prototype
    part_max = torch.empty((splits, rows), device=z.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    part_acc = torch.empty((splits, rows, dim) if with_output else (1, 1, 1), device=z.device, dtype=torch.float32)
    _scores_lse_kernel[(row_blocks, splits)](
        z, c, part_max, part_sum, part_acc, rows, prototypes, dim, inv_tau * LOG2E, k_per_split,
        BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_D=block_d, WITH_OUTPUT=with_output,
        PRECISION=dot_precision(z.dtype), num_warps=warps,
    )
    # merge the K ranges: lse = log Σ_s 2^{max_s} sum_s ; out = Σ_s 2^{max_s − max} acc_s / total
    row_max = part_max.amax(dim=0)
    weight = torch.exp2(part_max - row_max)
    total = (part_sum * weight).sum(dim=0)
    lse = (row_max + torch.log2(total)) * LN2
    if not with_output:
        return lse, z.new_empty((0, dim), dtype=torch.float32)
    out = (part_acc * weight[..., None]).sum(dim=0) / total[:, None]
    return lse, out


def softmax_prototype_grad(z: torch.Tensor, c: torch.Tensor, lse: torch.Tensor, row_weight: torch.Tensor,
                           inv_tau: float, splits: int | None = None) -> torch.Tensor:
    """``(K, D)`` float32 ``Σ_m row_weight[m] · softmax(z_m Cᵀ/τ)_k · z_m`` given the saved
    ``lse (M,)``; ``splits`` forces the number of row ranges (partials summed in order)."""
    rows, dim = z.shape
    prototypes = c.shape[0]
    block_m, block_k, block_d, warps = _tiles(dim, z.element_size())
    k_blocks = cdiv(prototypes, block_k)
    row_blocks = cdiv(rows, block_m)
    if splits is None:
        splits = max(1, min(row_blocks, cdiv(target_programs(z.device), k_blocks)))
    rows_per_split = cdiv(row_blocks, splits) * block_m
    splits = cdiv(rows, rows_per_split)
    partial = torch.empty((splits, prototypes, dim), device=z.device, dtype=torch.float32)
    _prototype_grad_kernel[(k_blocks, splits)](
        z, c, lse, row_weight, partial, rows, prototypes, dim, inv_tau * LOG2E, rows_per_split,
        BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_D=block_d, PRECISION=dot_precision(z.dtype), num_warps=warps,
    )
    return partial[0] if splits == 1 else partial.sum(dim=0)
