"""Sinkhorn codes (``Kernels.sinkhorn_codes``): for the batch rows only, the codes, their row mass and, on
the fused path, ``codes · C`` while the prototype tiles are loaded anyway. One program per (block of batch
rows, group, prototype range, part of the width); each range writes its partial mass and projection,
which the loss kernels add where they read them. Where the tiles give ``codes · C`` fewer columns than D
(``Tiles.block_out``), the parts of the width form the same codes and each projects onto its columns;
the first part stores the codes and mass.

The row's log-sum-exp comes from the last row step's partials (fused path: the prototypes are split to
fill the device, one sweep), or from a first sweep of the kernel itself (scores path, one range: its
launch budget has no room for another row step). Either way ``q = exp((u − max) − log Σ)`` is formed from
a rounded u computed exactly as the row step computes it, so each row sums to 1 within float32 rounding
even when |x|/ε is in the thousands. 16-bit ``codes · C`` products take q as a sum of two 16-bit parts
(hi + lo) on tensor cores: the loss value depends on them at 2e-3.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..kernels import Codes, ColumnStats, RowStats, SinkhornRows
from .launch import LOG2E
from .launcher import Buffer, PreparedLaunch
from .rows import RowShape, potential_tile, resident_rows, row_lse_log2, unpack_crop
from .tiles import MAX_CODE_SPLITS, balanced_ranges, sinkhorn_row_splits


@triton.jit
def _codes_kernel(
    main_ptr, queue_ptr, c_ptr, N, L, B, K_UNITS, D, crops_packed,
    max_ptr, sum_ptr, S, row_max_ptr, row_sum_ptr, R, codes_ptr, mass_ptr, projected_ptr,
    scale_log2, log2_prototypes, k_per_split, width_splits,
    ROW_LSE: tl.constexpr, NORMALIZE: tl.constexpr, RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr,
    K_ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DK: tl.constexpr, BLOCK_OUT: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    log2_prototypes = tl.cast(log2_prototypes, tl.float32)
    K = K_UNITS * K_ALIGN  # prototypes, a multiple of K_ALIGN as the compiler sees: vector loads of scores
    # ROW_LSE: the row log-sum-exp from the row step's partials; else NORMALIZE: from a first sweep
    # (one prototype range); else the codes are exp(u) (T = 0)
    pid_n = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2) // width_splits  # prototype range
    part_of_width = tl.program_id(2) % width_splits  # codes·C columns [part·BLOCK_OUT, +BLOCK_OUT)
    groups = tl.num_programs(1)
    crop = unpack_crop(crops_packed, g)
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # batch row j is Sinkhorn row L + j
    row_mask = j < B
    stored_rows = j + part_of_width * B < B  # every part forms the same codes; the first stores them
    dims = tl.arange(0, BLOCK_D)
    rows = resident_rows(main_ptr, queue_ptr, g, crop, L + j, row_mask, dims, L, B, D, RECOMPUTE, BLOCK_DK)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)

    row_max = tl.zeros((BLOCK_N,), tl.float32)
    log_row_sum = tl.zeros((BLOCK_N,), tl.float32)
    if ROW_LSE:
        row_max, log_row_sum = row_lse_log2(row_max_ptr, row_sum_ptr, g, L + j, row_mask, R, groups, N)
    elif NORMALIZE:  # sweep 1: the row's log-sum-exp of u (base 2), kept as max + log2(sum)
        row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_N,), tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            u, _ = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, L + j, row_mask, cols, cols < k_end,
                                  dims, L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                                  RECOMPUTE, PRECISION, BLOCK_DK)
            new_max = tl.maximum(row_max, tl.max(u, axis=1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            row_sum = row_sum * tl.exp2(row_max - safe_max) + tl.sum(tl.exp2(u - safe_max[:, None]), axis=1)
            row_max = new_max
        log_row_sum = tl.log2(row_sum)

    # the codes of this prototype range, their mass and codes · C
    mass = tl.zeros((BLOCK_N,), tl.float32)
    out_dims = part_of_width * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    projected = tl.zeros((BLOCK_N, BLOCK_OUT), tl.float32)
    code_rows = (g * B + j).to(tl.int64) * K
    for k0 in range(k_begin, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < k_end
        u, c = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, L + j, row_mask, cols, col_mask, dims,
                              L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                              RECOMPUTE, PRECISION, BLOCK_DK)
        # (u − max) is exact for the largest codes; adding max + log2(sum) first would round the
        # log-sum-exp at the magnitude of u (|x|/ε in the thousands: errors of 1e-4 per code)
        q = tl.exp2((u - row_max[:, None]) - log_row_sum[:, None])
        q = tl.where(row_mask[:, None] & col_mask[None, :], q, 0.0)
        tl.store(codes_ptr + code_rows[:, None] + cols[None, :], q,
                 mask=stored_rows[:, None] & col_mask[None, :])
        mass += tl.sum(q, axis=1)
        if RECOMPUTE:
            if BLOCK_OUT != BLOCK_D or BLOCK_DK != BLOCK_D:  # this part's columns of the prototypes (L1/L2 hit)
                c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + out_dims[None, :],
                            mask=col_mask[:, None] & (out_dims[None, :] < D), other=0.0)
            # accumulated in place (the accumulator operand of tl.dot): no second (rows × D) fp32 tile
            if c.dtype == tl.float32:
                projected = tl.dot(q, c, projected, input_precision=PRECISION)
            else:
                high = q.to(c.dtype)
                low = (q - high.to(tl.float32)).to(c.dtype)
                projected = tl.dot(low, c, tl.dot(high, c, projected))
    part = (split * groups + g) * B + j
    tl.store(mass_ptr + part, mass, mask=stored_rows)
    if RECOMPUTE:
        out = projected_ptr + part.to(tl.int64)[:, None] * D + out_dims[None, :]
        tl.store(out, projected, mask=row_mask[:, None] & (out_dims[None, :] < D))


def code_split_count(shape: RowShape, row_lse: bool, splits: int | None = None) -> int:
    """S, the prototype ranges of the codes: one where the kernel sweeps for the row's log-sum-exp itself;
    else ``splits`` if forced, else a fixed rule that fills the device."""
    if not row_lse and splits is None:
        return 1
    tiles = shape.tiles("codes")
    if splits is None:
        row_blocks = shape.groups * triton.cdiv(shape.batch, tiles.block_rows) * tiles.width_splits
        splits = sinkhorn_row_splits(tiles, row_blocks,
                                     shape.prototypes, shape.device, MAX_CODE_SPLITS)
    return balanced_ranges(shape.prototypes, tiles.block_k, splits)[1]


def prepare_codes(shape: RowShape, inv_eps: float, column_splits: int, normalize_rows: bool, splits: int, rows,
                  col_max, col_sum, row_stats, codes, mass, projected) -> PreparedLaunch:
    """The codes over ``splits`` prototype ranges (``code_split_count``). Buffers: ``rows`` the three row
    buffers, ``col_max``/``col_sum`` (S_col, G, K) float32 with S_col = ``column_splits``, ``row_stats``
    None or ``(row_max, row_sum, R)`` (the last row step's (R, G, N) partials: then ``normalize_rows``),
    outputs ``codes`` (G, B, K), ``mass`` (S, G, B) and, on the fused path, ``projected`` (S, G, B, D), all
    float32 (``projected`` None on the scores path)."""
    tiles = shape.tiles("codes")
    k_per_split, splits = balanced_ranges(shape.prototypes, tiles.block_k, splits)
    width_splits = tiles.width_splits  # 1 for stored scores: no codes·C
    grid = (triton.cdiv(shape.batch, tiles.block_rows), shape.groups, splits * width_splits)
    row_max, row_sum, row_splits = row_stats if row_stats is not None else (col_max, col_max, 1)
    arguments = (*shape.arguments(*rows), col_max, col_sum, column_splits, row_max, row_sum, row_splits, codes,
                 mass, projected if projected is not None else mass, inv_eps * LOG2E, math.log2(shape.prototypes),
                 k_per_split, width_splits)
    return PreparedLaunch(_codes_kernel, grid, arguments, dict(
        ROW_LSE=row_stats is not None, NORMALIZE=normalize_rows and row_stats is None, RECOMPUTE=shape.recompute,
        PRECISION=shape.precision, K_ALIGN=shape.k_align, BLOCK_N=tiles.block_rows, BLOCK_K=tiles.block_k,
        BLOCK_D=tiles.block_d, BLOCK_DK=tiles.scores_chunk, BLOCK_OUT=tiles.out_width,
        num_warps=tiles.warps, num_stages=tiles.stages))


def codes(rows: SinkhornRows, inv_eps: float, columns: ColumnStats, row_stats: RowStats | None,
          normalize_rows: bool, splits: int | None = None) -> Codes:
    """``Codes`` of the batch rows of ``rows`` given the column statistics and, where the row step ran with
    them, its ``RowStats``; mass and projection as S partials over prototype ranges (``splits`` forces S)."""
    shape = RowShape.of(rows)
    splits = code_split_count(shape, row_stats is not None, splits)
    f32 = dict(device=rows.main.device, dtype=torch.float32)
    code_values = torch.empty((shape.groups, shape.batch, shape.prototypes), **f32)
    mass = torch.empty((splits, shape.groups, shape.batch), **f32)
    projected = torch.empty((splits, shape.groups, shape.batch, shape.dim), **f32) if shape.recompute else None
    stats = None if row_stats is None else (row_stats.max, row_stats.sumexp)
    buffers = (*RowShape.tensors(rows), columns.max, columns.sumexp, *(stats or (None, None)), code_values, mass,
               projected)
    launch = prepare_codes(shape, inv_eps, columns.max.shape[0], normalize_rows, splits,
                           (Buffer(0), Buffer(1), Buffer(2)), Buffer(3), Buffer(4),
                           None if stats is None else (Buffer(5), Buffer(6), row_stats.max.shape[0]),
                           Buffer(7), Buffer(8), Buffer(9) if shape.recompute else None)
    launch.run_tensors(buffers)
    return Codes(code_values, mass, projected)
