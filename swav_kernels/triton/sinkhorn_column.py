"""Sinkhorn column step (``Kernels.sinkhorn_column_step``): per prototype, the log-sum-exp over
rows of ``t = x/ε + b[n]``, one program per (block of prototypes, group, row range). The row
potential b is merged from the row step's R partials as each row tile is loaded.

Scores are read (scores path) or recomputed as ``rows · c_kᵀ`` on tensor cores (fused path), the
prototype tile staying resident while the rows stream past. Each row range writes one partial
(max, Σ exp(t − max)); the next launch merges the S ranges while it loads the potential.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels import ColumnStats, RowStats, SinkhornRows
from .launch import LOG2E
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LN2, RowShape, row_pointers, row_potential_log2, row_starts, scores_by_chunks, unpack_crop
from .tiles import balanced_ranges, column_splits


@triton.jit
def _column_step_kernel(
    main_ptr, queue_ptr, c_ptr, N, L, B, K_UNITS, D, crops_packed,
    row_max_ptr, row_sum_ptr, R, max_ptr, sum_ptr,
    scale_log2, rows_per_split, counter_ptr, counters,
    HAS_ROW_POTENTIAL: tl.constexpr, RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr, ZERO_COUNTERS: tl.constexpr,
    K_ALIGN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DK: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    K = K_UNITS * K_ALIGN  # prototypes, a multiple of K_ALIGN as the compiler sees: vector loads of scores
    pid_k = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    groups = tl.num_programs(1)
    if ZERO_COUNTERS:  # the first launch of a call zeroes the tickets its later launches take (tickets.py)
        if (pid_k == 0) & (g == 0) & (split == 0):
            for i in range(0, counters, 256):
                ticket = i + tl.arange(0, 256)
                tl.store(counter_ptr + ticket, tl.zeros((256,), tl.int32), mask=ticket < counters)
    crop = unpack_crop(crops_packed, g)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_mask = cols < K
    dims = tl.arange(0, BLOCK_D)
    if RECOMPUTE and BLOCK_DK == BLOCK_D:  # resident; else the scores take D in chunks (rows.scores_by_chunks)
        c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + dims[None, :],
                    mask=col_mask[:, None] & (dims[None, :] < D), other=0.0)
    n_begin = split * rows_per_split
    n_end = tl.minimum(n_begin + rows_per_split, N)
    col_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    col_sum = tl.zeros((BLOCK_K,), tl.float32)
    poison = tl.zeros((BLOCK_K,), tl.float32)  # Σ 0·x: NaN when a score is not finite
    for n0 in range(n_begin, n_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        row_mask = n < n_end
        if HAS_ROW_POTENTIAL:
            b = row_potential_log2(row_max_ptr, row_sum_ptr, g, n, row_mask, R, groups, N)
        else:
            b = tl.zeros((BLOCK_N,), tl.float32)
        if RECOMPUTE:
            # the scores transposed, (prototypes × rows): the sums over rows then run along each thread's
            # own accumulator values and its quad (axis 1), not across warps through shared memory
            if BLOCK_DK == BLOCK_D:
                rows = tl.load(row_pointers(main_ptr, queue_ptr, g, crop, n, dims, L, B, D),
                               mask=row_mask[:, None] & (dims[None, :] < D), other=0.0)
                xt = tl.dot(c, tl.trans(rows), input_precision=PRECISION)
            else:
                xt = scores_by_chunks(c_ptr + cols.to(tl.int64) * D, col_mask,
                                      row_starts(main_ptr, queue_ptr, g, crop, n, L, B, D), row_mask, D, BLOCK_D,
                                      BLOCK_DK, PRECISION)
            poison += tl.sum(xt * 0.0, axis=1)
            t = tl.where(row_mask[None, :], xt * scale_log2 + b[None, :], float("-inf"))  # x·log2(e)/ε + b·log2(e)
            new_max = tl.maximum(col_max, tl.max(t, axis=1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            col_sum = col_sum * tl.exp2(col_max - safe_max) + tl.sum(tl.exp2(t - safe_max[:, None]), axis=1)
        else:  # stored scores, read row-major: (rows × prototypes), summed over axis 0
            x = tl.load(row_pointers(main_ptr, queue_ptr, g, crop, n, cols, L, B, K),
                        mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
            poison += tl.sum(x * 0.0, axis=0)
            t = tl.where(row_mask[:, None], x * scale_log2 + b[:, None], float("-inf"))
            new_max = tl.maximum(col_max, tl.max(t, axis=0))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            col_sum = col_sum * tl.exp2(col_max - safe_max) + tl.sum(tl.exp2(t - safe_max[None, :]), axis=0)
        col_max = new_max
    out = (split * groups + g) * K + cols
    tl.store(max_ptr + out, col_max * DEVICE_LN2, mask=col_mask)
    tl.store(sum_ptr + out, col_sum + poison, mask=col_mask)


def column_split_count(shape: RowShape, splits: int | None = None) -> int:
    """S, the row ranges of the column step: ``splits`` if forced, else a fixed rule that fills the device."""
    tiles = shape.tiles("column")
    if splits is None:
        splits = column_splits(tiles, shape.groups, shape.rows, shape.prototypes, shape.device)
    return balanced_ranges(shape.rows, tiles.block_rows, splits)[1]


def prepare_column_step(shape: RowShape, inv_eps: float, splits: int, rows, row_stats, col_max,
                        col_sum, counters=None) -> PreparedLaunch:
    """The column step over ``splits`` row ranges (from ``column_split_count``). Buffers: ``rows`` the three
    row buffers (``RowShape.arguments``), ``row_stats`` None or ``(row_max, row_sum, R)``: the row step's
    (R, G, N) float32 partials and R, outputs ``col_max`` and ``col_sum`` (S, G, K) float32; ``counters``
    None or ``(buffer, count)``: int32 tickets of later launches, which this launch zeroes."""
    tiles = shape.tiles("column")
    rows_per_split, splits = balanced_ranges(shape.rows, tiles.block_rows, splits)
    grid = (triton.cdiv(shape.prototypes, tiles.block_k), shape.groups, splits)
    row_max, row_sum, row_splits = row_stats if row_stats is not None else (col_max, col_max, 1)
    counter_buffer, count = counters if counters is not None else (col_max, 0)
    arguments = (*shape.arguments(*rows), row_max, row_sum, row_splits, col_max, col_sum, inv_eps * LOG2E,
                 rows_per_split, counter_buffer, count)
    return PreparedLaunch(_column_step_kernel, grid, arguments, dict(
        HAS_ROW_POTENTIAL=row_stats is not None, RECOMPUTE=shape.recompute, PRECISION=shape.precision,
        ZERO_COUNTERS=counters is not None,
        K_ALIGN=shape.k_align, BLOCK_N=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d,
        BLOCK_DK=tiles.scores_chunk,
        num_warps=tiles.warps, num_stages=tiles.stages))


def column_step(rows: SinkhornRows, inv_eps: float, row_stats: RowStats | None,
                splits: int | None = None) -> ColumnStats:
    """``ColumnStats`` (S, G, K) of ``rows`` with the row step's ``RowStats`` (R, G, N) or None (b = 0);
    ``splits`` forces S (default: a fixed rule that fills the device)."""
    shape = RowShape.of(rows)
    splits = column_split_count(shape, splits)
    col_max = torch.empty((splits, shape.groups, shape.prototypes), device=rows.main.device, dtype=torch.float32)
    col_sum = torch.empty_like(col_max)
    stats = None if row_stats is None else (row_stats.max, row_stats.sumexp)
    buffers = (*RowShape.tensors(rows), *(stats or (None, None)), col_max, col_sum)
    launch = prepare_column_step(shape, inv_eps, splits, (Buffer(0), Buffer(1), Buffer(2)),
                                 None if stats is None else (Buffer(3), Buffer(4), row_stats.max.shape[0]),
                                 Buffer(5), Buffer(6))
    launch.run_tensors(buffers)
    return ColumnStats(col_max, col_sum)
