"""Sinkhorn row step (``Kernels.sinkhorn_row_step``): per row, ``b = −LSE_k(x/ε + a[k])``, one
program per (block of rows, group).

The column potential a is merged from the column step's partials tile by tile as the row is
swept (no separate merge launch). Scores are read, or recomputed on tensor cores with the row
tile resident while the prototypes stream past (a flash-attention forward without output).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..kernels import ColumnStats, SinkhornRows
from .launch import LOG2E
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LN2, RowShape, potential_tile, resident_rows, unpack_crop


@triton.jit
def _row_step_kernel(
    main_ptr, queue_ptr, c_ptr, N, L, B, K, D, crops_packed,
    max_ptr, sum_ptr, S, b_ptr,
    scale_log2, log2_prototypes,
    RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    g = tl.program_id(1)
    groups = tl.num_programs(1)
    crop = unpack_crop(crops_packed, g)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = n < N
    dims = tl.arange(0, BLOCK_D)
    rows = resident_rows(main_ptr, queue_ptr, g, crop, n, row_mask, dims, L, B, D, RECOMPUTE)
    row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        t, _ = potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, n, row_mask, cols, cols < K, dims,
                              L, B, K, D, max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                              RECOMPUTE, PRECISION)
        new_max = tl.maximum(row_max, tl.max(t, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        row_sum = row_sum * tl.exp2(row_max - safe_max) + tl.sum(tl.exp2(t - safe_max[:, None]), axis=1)
        row_max = new_max
    tl.store(b_ptr + g * N + n, -(row_max + tl.log2(row_sum)) * DEVICE_LN2, mask=row_mask)


def prepare_row_step(shape: RowShape, inv_eps: float, splits: int, rows, col_max, col_sum,
                     potential) -> PreparedLaunch:
    """The row step. Buffers: ``rows`` the three row buffers, ``col_max``/``col_sum`` (S, G, K) float32
    with S = ``splits``, output ``potential`` (G, N) float32."""
    tiles = shape.tiles("row")
    grid = (triton.cdiv(shape.rows, tiles.block_rows), shape.groups)
    arguments = (*shape.arguments(*rows), col_max, col_sum, splits, potential, inv_eps * LOG2E,
                 math.log2(shape.prototypes))
    return PreparedLaunch(_row_step_kernel, grid, arguments, dict(
        RECOMPUTE=shape.recompute, PRECISION=shape.precision,
        BLOCK_N=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d,
        num_warps=tiles.warps, num_stages=tiles.stages))


def row_step(rows: SinkhornRows, inv_eps: float, columns: ColumnStats) -> torch.Tensor:
    """Row potential ``b (G, N)`` float32 of ``rows`` given the column statistics."""
    shape = RowShape.of(rows)
    potential = torch.empty((shape.groups, shape.rows), device=rows.main.device, dtype=torch.float32)
    launch = prepare_row_step(shape, inv_eps, columns.max.shape[0], (Buffer(0), Buffer(1), Buffer(2)),
                              Buffer(3), Buffer(4), Buffer(5))
    launch.run_tensors((*RowShape.tensors(rows), columns.max, columns.sumexp, potential))
    return potential
