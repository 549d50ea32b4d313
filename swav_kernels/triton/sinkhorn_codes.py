"""Sinkhorn codes (``Kernels.sinkhorn_codes``): the last row step, for the batch rows only, which
writes the codes, their row mass and, on the fused path, ``codes · C`` while the prototype tiles
are loaded anyway. One program per (block of batch rows, group).

With row normalisation it sweeps each row twice: the log-sum-exp of ``u = x/ε + a`` as
(max, log Σ exp(u − max)), then ``q = exp((u − max) − log Σ)`` from the same rounded u, so every
row sums to 1 within float32 rounding even when |x|/ε is in the thousands. 16-bit ``codes · C`` products take q as a sum of two
16-bit parts (hi + lo) on tensor cores: the loss value depends on them at 2e-3.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..kernels import Codes, ColumnStats, SinkhornRows
from .launch import LOG2E
from .launcher import Buffer, PreparedLaunch
from .rows import RowShape, potential_tile, resident_rows, unpack_crop


@triton.jit
def _codes_kernel(
    main_ptr, queue_ptr, c_ptr, N, L, B, K, D, crops_packed,
    max_ptr, sum_ptr, S, codes_ptr, mass_ptr, projected_ptr,
    scale_log2, log2_prototypes,
    NORMALIZE: tl.constexpr, RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    g = tl.program_id(1)
    groups = tl.num_programs(1)
    crop = unpack_crop(crops_packed, g)
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # batch row j is Sinkhorn row L + j
    row_mask = j < B
    dims = tl.arange(0, BLOCK_D)
    rows = resident_rows(main_ptr, queue_ptr, g, crop, L + j, row_mask, dims, L, B, D, RECOMPUTE)

    row_max = tl.zeros((BLOCK_N,), tl.float32)
    log_row_sum = tl.zeros((BLOCK_N,), tl.float32)
    if NORMALIZE:  # sweep 1: the row's log-sum-exp of u (base 2), kept as max + log2(sum)
        row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_N,), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            u, _ = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, L + j, row_mask, cols, cols < K, dims,
                                  L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                                  RECOMPUTE, PRECISION)
            new_max = tl.maximum(row_max, tl.max(u, axis=1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            row_sum = row_sum * tl.exp2(row_max - safe_max) + tl.sum(tl.exp2(u - safe_max[:, None]), axis=1)
            row_max = new_max
        log_row_sum = tl.log2(row_sum)

    # sweep 2: codes, their mass and codes · C
    mass = tl.zeros((BLOCK_N,), tl.float32)
    projected = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    code_rows = (g * B + j).to(tl.int64) * K
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        u, c = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, L + j, row_mask, cols, col_mask, dims,
                              L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                              RECOMPUTE, PRECISION)
        # (u − max) is exact for the largest codes; adding max + log2(sum) first would round the
        # log-sum-exp at the magnitude of u (|x|/ε in the thousands: errors of 1e-4 per code)
        q = tl.exp2((u - row_max[:, None]) - log_row_sum[:, None])
        q = tl.where(row_mask[:, None] & col_mask[None, :], q, 0.0)
        tl.store(codes_ptr + code_rows[:, None] + cols[None, :], q, mask=row_mask[:, None] & col_mask[None, :])
        mass += tl.sum(q, axis=1)
        if RECOMPUTE:
            if c.dtype == tl.float32:
                projected += tl.dot(q, c, input_precision=PRECISION)
            else:
                high = q.to(c.dtype)
                low = (q - high.to(tl.float32)).to(c.dtype)
                projected += tl.dot(high, c) + tl.dot(low, c)
    tl.store(mass_ptr + g * B + j, mass, mask=row_mask)
    if RECOMPUTE:
        out = projected_ptr + (g * B + j).to(tl.int64)[:, None] * D + dims[None, :]
        tl.store(out, projected, mask=row_mask[:, None] & (dims[None, :] < D))


def prepare_codes(shape: RowShape, inv_eps: float, splits: int, normalize_rows: bool, rows, col_max, col_sum,
                  codes, mass, projected) -> PreparedLaunch:
    """The codes launch. Buffers: ``rows`` the three row buffers, ``col_max``/``col_sum`` (S, G, K) float32
    with S = ``splits``, outputs ``codes`` (G, B, K), ``mass`` (G, B) and, on the fused path,
    ``projected`` (G, B, D), all float32 (``projected`` None on the scores path)."""
    tiles = shape.tiles("codes")
    grid = (triton.cdiv(shape.batch, tiles.block_rows), shape.groups)
    arguments = (*shape.arguments(*rows), col_max, col_sum, splits, codes, mass,
                 projected if projected is not None else mass, inv_eps * LOG2E, math.log2(shape.prototypes))
    return PreparedLaunch(_codes_kernel, grid, arguments, dict(
        NORMALIZE=normalize_rows, RECOMPUTE=shape.recompute, PRECISION=shape.precision,
        BLOCK_N=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d,
        num_warps=tiles.warps, num_stages=tiles.stages))


def codes(rows: SinkhornRows, inv_eps: float, columns: ColumnStats, normalize_rows: bool) -> Codes:
    """``Codes`` of the batch rows of ``rows`` given the column statistics."""
    shape = RowShape.of(rows)
    f32 = dict(device=rows.main.device, dtype=torch.float32)
    code_values = torch.empty((shape.groups, shape.batch, shape.prototypes), **f32)
    mass = torch.empty((shape.groups, shape.batch), **f32)
    projected = torch.empty((shape.groups, shape.batch, shape.dim), **f32) if shape.recompute else None
    launch = prepare_codes(shape, inv_eps, columns.max.shape[0], normalize_rows, (Buffer(0), Buffer(1), Buffer(2)),
                           Buffer(3), Buffer(4), Buffer(5), Buffer(6), Buffer(7) if shape.recompute else None)
    launch.run_tensors((*RowShape.tensors(rows), columns.max, columns.sumexp, code_values, mass, projected))
    return Codes(code_values, mass, projected)
