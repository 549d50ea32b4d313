"""Family 2: Sinkhorn passes over ``x (G, N, K)`` in the log domain (dual potentials).

``column_init``: per prototype, over this rank's rows, the max of x/ε and Σ exp(x/ε − max)
(one pass, online; rows split over programs, partials merged afterwards).

``row_step``: per row, the exact log-sum-exp of ``t = x/ε + a[k]`` (first pass over the
row), then a second pass over the same row (mostly from L2) that writes the per-block
column sums of ``exp(t − lse − log N_total)`` and/or the codes. Column partials are summed
in a fixed order afterwards: deterministic, no atomics. The formulas are those of
``swav_kernels.kernels.Kernels``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .launch import LN2, LOG2E, cdiv, next_power_of_2, target_programs


@triton.jit
def _column_init_kernel(
    x_ptr, max_ptr, sum_ptr,
    N, K, scale_log2, rows_per_split, splits,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # max_n t and Σ_n 2^(t − max) with t = x·log2(e)/ε, for this program's rows and columns.
    g = tl.program_id(0)
    pid_k = tl.program_id(1)
    split = tl.program_id(2)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_mask = cols < K
    n_begin = split * rows_per_split
    n_end = tl.minimum(n_begin + rows_per_split, N)
    col_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    col_sum = tl.zeros((BLOCK_K,), tl.float32)
    base = x_ptr + g.to(tl.int64) * N * K
    for n0 in range(n_begin, n_end, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < n_end) & col_mask[None, :]
        t = tl.load(base + rows[:, None].to(tl.int64) * K + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        t = tl.where(mask, t * scale_log2, float("-inf"))
        new_max = tl.maximum(col_max, tl.max(t, axis=0))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # only for padding columns
        col_sum = col_sum * tl.exp2(col_max - safe_max) + tl.sum(tl.exp2(t - safe_max[None, :]), axis=0)
        col_max = new_max
    out = (g * splits + split) * K + cols
    tl.store(max_ptr + out, col_max, mask=col_mask)
    tl.store(sum_ptr + out, col_sum, mask=col_mask)


@triton.jit
def _row_step_kernel(
    x_ptr, potential_ptr, partial_ptr, codes_ptr,
    N, K, scale_log2, log2_rows_total, codes_from_row, row_blocks,
    NORMALIZE: tl.constexpr, COLUMN_SUMS: tl.constexpr, WRITE_CODES: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Base 2 throughout: t = x·log2(e)/ε + a·log2(e).
    g = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    base = x_ptr + g.to(tl.int64) * N * K + rows[:, None].to(tl.int64) * K
    potential = potential_ptr + g * K

    # pass 1: lse of the row, exact (max-shifted, online)
    lse = tl.zeros((BLOCK_N,), tl.float32)
    if NORMALIZE:
        row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_N,), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            mask = row_mask[:, None] & (cols[None, :] < K)
            a = tl.load(potential + cols, mask=cols < K, other=0.0) * 1.4426950408889634
            t = tl.load(base + cols[None, :], mask=mask, other=0.0).to(tl.float32) * scale_log2 + a[None, :]
            t = tl.where(mask, t, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(t, axis=1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # only for padding rows
            row_sum = row_sum * tl.exp2(row_max - safe_max) + tl.sum(tl.exp2(t - safe_max[:, None]), axis=1)
            row_max = new_max
        lse = tl.where(row_mask, row_max + tl.log2(tl.where(row_mask, row_sum, 1.0)), 0.0)

    # pass 2: column partial sums and/or the codes
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (cols[None, :] < K)
        a = tl.load(potential + cols, mask=cols < K, other=0.0) * 1.4426950408889634
        t = tl.load(base + cols[None, :], mask=mask, other=0.0).to(tl.float32) * scale_log2 + a[None, :]
        t = tl.where(mask, t, float("-inf"))
        # with row potential b = −lse − log N (or 0): column sums of exp(t + b), codes exp(t + b + log N)
        if NORMALIZE:
            shifted = t - lse[:, None]  # from the same rounded t as lse: rows sum to 1
            p = tl.exp2(shifted - log2_rows_total)
            code = tl.exp2(shifted)
        else:
            p = tl.exp2(t)
            code = tl.exp2(t + log2_rows_total)
        if COLUMN_SUMS:
            tl.store(partial_ptr + (g * row_blocks + pid_n) * K + cols, tl.sum(p, axis=0), mask=cols < K)
        if WRITE_CODES:
            out_rows = rows - codes_from_row
            out = codes_ptr + (g.to(tl.int64) * (N - codes_from_row) + out_rows[:, None]) * K + cols[None, :]
            tl.store(out, code, mask=mask & (out_rows[:, None] >= 0))


def _row_tiles(prototypes: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K) for streaming rows of ``prototypes`` scores."""
    return 16, min(256, max(16, next_power_of_2(prototypes)))


def column_init(x: torch.Tensor, inv_eps: float, splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(col_max, col_sum)`` (G, K) float32 of ``x (G, N, K)``: max_n x/ε and Σ_n exp(x/ε − max)."""
    groups, rows, prototypes = x.shape
    block_n, block_k = _row_tiles(prototypes)
    k_blocks = cdiv(prototypes, block_k)
    row_blocks = cdiv(rows, block_n)
    if splits is None:
        splits = max(1, min(row_blocks, cdiv(target_programs(x.device), groups * k_blocks)))
    rows_per_split = cdiv(row_blocks, splits) * block_n
    splits = cdiv(rows, rows_per_split)
    part_max = torch.empty((groups, splits, prototypes), device=x.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    _column_init_kernel[(groups, k_blocks, splits)](
        x, part_max, part_sum, rows, prototypes, inv_eps * LOG2E, rows_per_split, splits,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )
    col_max = part_max.amax(dim=1)
    col_sum = (part_sum * torch.exp2(part_max - col_max[:, None])).sum(dim=1)
    return col_max * LN2, col_sum


def row_step(x: torch.Tensor, inv_eps: float, col_potential: torch.Tensor, log_rows_total: float,
             normalize_rows: bool, want_column_sums: bool, codes_from_row: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One per-sample normalisation of ``x (G, N, K)`` with column potentials ``(G, K)``;
    returns ``(column_sums (G, K) or (G, 0), codes (G, N − codes_from_row, K) or (G, 0, K))``."""
    groups, rows, prototypes = x.shape
    block_n, block_k = _row_tiles(prototypes)
    row_blocks = cdiv(rows, block_n)
    write_codes = codes_from_row >= 0
    partial = torch.empty((groups, row_blocks if want_column_sums else 0, prototypes), device=x.device,
                          dtype=torch.float32)
    code_rows = rows - codes_from_row if write_codes else 0
    codes = torch.empty((groups, code_rows, prototypes), device=x.device, dtype=torch.float32)
    _row_step_kernel[(groups, row_blocks)](
        x, col_potential, partial, codes, rows, prototypes, inv_eps * LOG2E, log_rows_total / math.log(2),
        codes_from_row if write_codes else 0, row_blocks,
        NORMALIZE=normalize_rows, COLUMN_SUMS=want_column_sums, WRITE_CODES=write_codes,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )
    column_sums = partial.sum(dim=1) if want_column_sums else partial.new_empty((groups, 0))
    return column_sums, codes
