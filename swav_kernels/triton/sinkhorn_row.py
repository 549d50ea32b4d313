"""Sinkhorn row step (``Kernels.sinkhorn_row_step``): per row, the log-sum-exp over prototypes of
``t = x/ε + a[k]``, as R partials over prototype ranges, one program per (block of rows, group, range).

The column potential a is merged from the column step's partials tile by tile as the row is swept
(no separate merge launch); the R row partials are merged by the launch that reads them (the next
column step or the codes), so splitting the prototypes to fill the device adds no launch. Scores are
read, or recomputed on tensor cores with the row tile resident while the prototypes stream past (a
flash-attention forward without output).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..kernels import ColumnStats, RowStats, SinkhornRows
from .launch import LOG2E
from .launcher import Buffer, PreparedLaunch
from .rows import RowShape, potential_tile, resident_rows, unpack_crop
from .tiles import balanced_ranges, sinkhorn_row_splits


@triton.jit
def _row_step_kernel(
    main_ptr, queue_ptr, c_ptr, N, L, B, K_UNITS, D, crops_packed,
    max_ptr, sum_ptr, S, row_max_ptr, row_sum_ptr,
    scale_log2, log2_prototypes, k_per_split,
    RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr,
    K_ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DK: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    log2_prototypes = tl.cast(log2_prototypes, tl.float32)
    K = K_UNITS * K_ALIGN  # prototypes, a multiple of K_ALIGN as the compiler sees: vector loads of scores
    pid_n = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    groups = tl.num_programs(1)
    crop = unpack_crop(crops_packed, g)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = n < N
    dims = tl.arange(0, BLOCK_D)
    rows = resident_rows(main_ptr, queue_ptr, g, crop, n, row_mask, dims, L, B, D, RECOMPUTE, BLOCK_DK)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        t, _ = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, n, row_mask, cols, cols < k_end, dims,
                              L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                              RECOMPUTE, PRECISION, BLOCK_DK)
        new_max = tl.maximum(row_max, tl.max(t, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        row_sum = row_sum * tl.exp2(row_max - safe_max) + tl.sum(tl.exp2(t - safe_max[:, None]), axis=1)
        row_max = new_max
    out = (split * groups + g) * N + n
    tl.store(row_max_ptr + out, row_max, mask=row_mask)  # base 2: exactly the max of the rounded u
    tl.store(row_sum_ptr + out, row_sum, mask=row_mask)


def row_split_count(shape: RowShape, splits: int | None = None) -> int:
    """R, the prototype ranges of the row step: ``splits`` if forced, else a fixed rule that fills the device."""
    tiles = shape.tiles("row")
    if splits is None:
        splits = sinkhorn_row_splits(tiles, shape.groups * triton.cdiv(shape.rows, tiles.block_rows),
                                     shape.prototypes, shape.device)
    return balanced_ranges(shape.prototypes, tiles.block_k, splits)[1]


def prepare_row_step(shape: RowShape, inv_eps: float, column_splits: int, splits: int, rows, col_max, col_sum,
                     row_max, row_sum) -> PreparedLaunch:
    """The row step over ``splits`` prototype ranges (from ``row_split_count``). Buffers: ``rows`` the three
    row buffers, ``col_max``/``col_sum`` (S, G, K) float32 with S = ``column_splits``, outputs
    ``row_max``/``row_sum`` (R, G, N) float32."""
    tiles = shape.tiles("row")
    k_per_split, splits = balanced_ranges(shape.prototypes, tiles.block_k, splits)
    grid = (triton.cdiv(shape.rows, tiles.block_rows), shape.groups, splits)
    arguments = (*shape.arguments(*rows), col_max, col_sum, column_splits, row_max, row_sum, inv_eps * LOG2E,
                 math.log2(shape.prototypes), k_per_split)
    return PreparedLaunch(_row_step_kernel, grid, arguments, dict(
        RECOMPUTE=shape.recompute, PRECISION=shape.precision,
        K_ALIGN=shape.k_align, BLOCK_N=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d,
        BLOCK_DK=tiles.scores_chunk, num_warps=tiles.warps, num_stages=tiles.stages))


def row_step(rows: SinkhornRows, inv_eps: float, columns: ColumnStats, splits: int | None = None) -> RowStats:
    """``RowStats`` (R, G, N) of ``rows`` given the column statistics; ``splits`` forces R."""
    shape = RowShape.of(rows)
    splits = row_split_count(shape, splits)
    row_max = torch.empty((splits, shape.groups, shape.rows), device=rows.main.device, dtype=torch.float32)
    row_sum = torch.empty_like(row_max)
    launch = prepare_row_step(shape, inv_eps, columns.max.shape[0], splits, (Buffer(0), Buffer(1), Buffer(2)),
                              Buffer(3), Buffer(4), Buffer(5), Buffer(6))
    launch.run_tensors((*RowShape.tensors(rows), columns.max, columns.sumexp, row_max, row_sum))
    return RowStats(row_max, row_sum)
