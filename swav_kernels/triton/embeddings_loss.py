"""Loss forward from embeddings (``Kernels.embeddings_loss``): scoring + temperature softmax,
never storing the (M, K) scores, in one launch that also adds up the loss.

Per block of rows: the online log-sum-exp of ``z·Cᵀ/τ`` over the prototypes and, when gradients
are wanted, the attention output ``out = softmax · C`` (a flash-attention forward with Z as
queries and C as keys and values); then each row's share of the loss,
``(w·lse − Σ_{a: A[a]≠v} projected[a, b]·z/τ + Σ 0·z) / denom``, summed over the block. Where
row blocks are too few to fill the device the prototypes are split into S ranges (flash-decoding):
each program writes its partial, and the last of a row block's S programs to finish (an integer
ticket, ``tl.atomic_add``) merges the S partials in a fixed order. Likewise the last row block to
finish adds the block sums in order into the loss. No float is added atomically, so the result
is the same bits run to run; the tickets start at 0 (``counters``, zeroed by an earlier launch)
and are reset by the program that used them. Where the tiles hold fewer output columns than D
(``Tiles.block_out``), each part of the width scores the same rows and keeps its own columns of the
output (and its own merge); the first part writes lse and the loss.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..kernels import Codes
from .launch import LOG2E, dot_precision, pack_crops
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LN2, predicted_projection, predicted_weight, scores_by_chunks
from .tickets import last_to_arrive
from .tiles import Tiles, balanced_ranges, key_splits, matmul_tiles


@triton.jit
def _block_loss(z_ptr, rows, row_mask, lse, mass_ptr, projected_ptr, B, D, n_assign, crops_packed, code_splits,
                inv_tau, CHUNK: tl.constexpr):
    """Σ over the block's rows of ``w·lse − (Σ_{a≠v} projected[a, b])·z/τ + Σ 0·z``. Reads z and the
    projections again, CHUNK columns at a time, so that no (rows × D) tile stays live here."""
    crop = rows // B
    b = rows % B
    weight = predicted_weight(mass_ptr, crops_packed, n_assign, crop, b, B, row_mask, code_splits)
    cross = tl.zeros(rows.shape, tl.float32)
    poison = tl.zeros(rows.shape, tl.float32)
    for d0 in range(0, D, CHUNK):
        dims = d0 + tl.arange(0, CHUNK)
        z = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + dims[None, :],
                    mask=row_mask[:, None] & (dims[None, :] < D), other=0.0).to(tl.float32)
        projection = predicted_projection(projected_ptr, crops_packed, n_assign, crop, b, B, D, dims, row_mask,
                                          code_splits)
        cross += tl.sum(projection * z, axis=1)
        poison += tl.sum(z * 0.0, axis=1)
    terms = weight * lse - inv_tau * cross + poison
    return tl.sum(tl.where(row_mask, terms, 0.0), axis=0)


@triton.jit
def _loss_forward_kernel(
    z_ptr, c_ptr, M, K, D,
    max_ptr, sum_ptr, acc_ptr,
    lse_ptr, out_ptr, block_loss_ptr, loss_ptr, counter_ptr,
    mass_ptr, projected_ptr, B, n_assign, crops_packed, code_splits,
    scale_log2, inv_tau, inv_denom, k_per_split, splits, width_splits,
    WITH_OUTPUT: tl.constexpr, FINAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_OUT: tl.constexpr,
    BLOCK_DK: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    inv_tau = tl.cast(inv_tau, tl.float32)
    inv_denom = tl.cast(inv_denom, tl.float32)
    # counters: row_blocks × width_splits tickets of the S-way merges, then one for the loss's sum
    pid_m = tl.program_id(0)
    split = tl.program_id(1) // width_splits  # prototype range
    part_of_width = tl.program_id(1) % width_splits  # softmax·C columns [part·BLOCK_OUT, +BLOCK_OUT)
    row_blocks = tl.num_programs(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    dims = tl.arange(0, BLOCK_D)
    if BLOCK_DK == BLOCK_D:  # resident; else the scores take D in chunks from memory (rows.scores_by_chunks)
        z = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + dims[None, :],
                    mask=row_mask[:, None] & (dims[None, :] < D), other=0.0)
    out_dims = part_of_width * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    tile_mask = row_mask[:, None] & (out_dims[None, :] < D)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_OUT), tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        if BLOCK_DK == BLOCK_D:
            c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + dims[None, :],
                        mask=(cols[:, None] < k_end) & (dims[None, :] < D), other=0.0)
            s = tl.dot(z, tl.trans(c), input_precision=PRECISION)
        else:
            s = scores_by_chunks(z_ptr + rows.to(tl.int64) * D, row_mask, c_ptr + cols.to(tl.int64) * D,
                                 cols < k_end, D, BLOCK_D, BLOCK_DK, PRECISION)
        s = s * scale_log2  # base 2: z·c·log2(e)/τ
        s = tl.where(cols[None, :] < k_end, s, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(s, axis=1))  # finite: every tile has a valid column
        rescale = tl.exp2(row_max - new_max)
        p = tl.exp2(s - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        if WITH_OUTPUT:
            if BLOCK_OUT != BLOCK_D or BLOCK_DK != BLOCK_D:  # this part's columns of the prototypes (L1/L2 hit)
                c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + out_dims[None, :],
                            mask=(cols[:, None] < k_end) & (out_dims[None, :] < D), other=0.0)
            acc = acc * rescale[:, None] + tl.dot(p.to(c.dtype), c, input_precision=PRECISION)
        row_max = new_max
    finished = True
    if not FINAL:  # store this range's partial; the row block's last range merges them in order
        # every part of the width forms the same max and sum; each keeps its own (its merge reads only its own)
        first = part_of_width * splits
        part = (first + split) * M + rows
        tl.store(max_ptr + part, row_max, mask=row_mask)
        tl.store(sum_ptr + part, row_sum, mask=row_mask)
        if WITH_OUTPUT:
            tl.store(acc_ptr + (split * M + rows)[:, None].to(tl.int64) * D + out_dims[None, :], acc, mask=tile_mask)
        finished = last_to_arrive(counter_ptr + pid_m * width_splits + part_of_width, splits)
        if finished:
            # lse = log Σ_s 2^{max_s}·sum_s ; out = Σ_s 2^{max_s − max} acc_s / Σ_s 2^{max_s − max} sum_s
            row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
            for s_ in range(splits):
                row_max = tl.maximum(row_max, tl.load(max_ptr + (first + s_) * M + rows, mask=row_mask, other=0.0,
                                                      cache_modifier=".cg"))
            row_sum = tl.zeros((BLOCK_M,), tl.float32)
            acc = tl.zeros((BLOCK_M, BLOCK_OUT), tl.float32)
            for s_ in range(splits):
                weight = tl.exp2(tl.load(max_ptr + (first + s_) * M + rows, mask=row_mask, other=0.0,
                                         cache_modifier=".cg") - row_max)
                row_sum += weight * tl.load(sum_ptr + (first + s_) * M + rows, mask=row_mask, other=0.0,
                                            cache_modifier=".cg")
                if WITH_OUTPUT:
                    part_rows = (s_ * M + rows).to(tl.int64)
                    acc += weight[:, None] * tl.load(acc_ptr + part_rows[:, None] * D + out_dims[None, :],
                                                     mask=tile_mask, other=0.0, cache_modifier=".cg")
    if finished and WITH_OUTPUT:
        tl.store(out_ptr + rows[:, None].to(tl.int64) * D + out_dims[None, :], acc / row_sum[:, None], mask=tile_mask)
    if finished and part_of_width == 0:  # the row block's lse and loss, once
        lse = (row_max + tl.log2(row_sum)) * DEVICE_LN2
        tl.store(lse_ptr + rows, lse, mask=row_mask)
        block_total = _block_loss(z_ptr, rows, row_mask, lse, mass_ptr, projected_ptr, B, D, n_assign, crops_packed,
                                  code_splits, inv_tau, CHUNK=32)
        tl.store(block_loss_ptr + pid_m, block_total * inv_denom)
        # the loss: the block sums in a fixed order
        if last_to_arrive(counter_ptr + row_blocks * width_splits, row_blocks):
            total = tl.zeros((), tl.float32)
            for i in range(row_blocks):
                total += tl.load(block_loss_ptr + i, cache_modifier=".cg")
            tl.store(loss_ptr, total)


class LossForwardShape(NamedTuple):
    """Sizes, tiles and splits of the loss forward for z (M, D), c (K, D) and |A| × B codes."""

    rows: int  # M = V·B
    dim: int  # D
    prototypes: int  # K
    n_assign: int  # |A|
    batch: int  # B
    with_output: bool  # also out = softmax·C (the backward needs it)
    tiles: Tiles
    splits: int  # prototype ranges S (1: no merge launch)
    k_per_split: int

    @classmethod
    def of(cls, rows: int, dim: int, prototypes: int, n_assign: int, batch: int, dtype: torch.dtype,
           device: torch.device, with_output: bool, splits: int | None = None) -> "LossForwardShape":
        tiles = matmul_tiles("forward", dim, dtype, dot_precision(dtype), rows, device)
        if not with_output:  # no (rows × D) accumulator to share out
            tiles = tiles._replace(block_out=0)
        if splits is None:
            splits = key_splits(tiles, rows, prototypes, device)
        k_per_split, splits = balanced_ranges(prototypes, tiles.block_k, splits)
        return cls(rows, dim, prototypes, n_assign, batch, with_output, tiles, splits, k_per_split)

    @property
    def row_blocks(self) -> int:
        return triton.cdiv(self.rows, self.tiles.block_rows)

    def partial_shapes(self) -> tuple:
        """Shapes of the split partials (max, sum: per part of the width; acc); None for those not needed."""
        if self.splits == 1:
            return None, None, None
        parts = self.tiles.width_splits * self.splits
        return ((parts, self.rows), (parts, self.rows),
                (self.splits, self.rows, self.dim) if self.with_output else None)

    @property
    def counters(self) -> int:
        """int32 tickets the launch needs, zero before it runs: one per row block and part of the width, and
        one for the sum."""
        return self.row_blocks * self.tiles.width_splits + 1


def prepare_loss_forward(shape: LossForwardShape, dtype: torch.dtype, crops, inv_tau: float, code_splits: int, z,
                         c, mass, projected, lse, out, block_loss, loss, counters, part_max, part_sum,
                         part_acc) -> PreparedLaunch:
    """The loss forward, one launch. Buffers: ``z``, ``c``, the codes' ``mass`` (S_codes, |A|, B) and
    ``projected`` (S_codes, |A|, B, D) float32 partials in (S_codes = ``code_splits``); out ``lse`` (M,),
    ``out`` (M, D) (None without output), ``block_loss`` (row blocks,) and the 0-d ``loss``, all float32;
    ``counters`` int32 (``shape.counters``), zero; the split partials (None when S = 1)."""
    tiles = shape.tiles
    final = shape.splits == 1
    n_crops = shape.rows // shape.batch
    inv_denom = 1.0 / (shape.n_assign * (n_crops - 1) * shape.batch)
    precision = dot_precision(dtype)
    return PreparedLaunch(_loss_forward_kernel, (shape.row_blocks, shape.splits * tiles.width_splits), (
        z, c, shape.rows, shape.prototypes, shape.dim,
        lse if final else part_max, lse if final else part_sum,
        lse if final or not shape.with_output else part_acc,
        lse, out if shape.with_output else lse, block_loss, loss, counters,
        mass, projected, shape.batch, shape.n_assign, pack_crops(crops), code_splits,
        inv_tau * LOG2E, inv_tau, inv_denom, shape.k_per_split, shape.splits, tiles.width_splits),
        dict(WITH_OUTPUT=shape.with_output, FINAL=final, PRECISION=precision,
             BLOCK_M=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d, BLOCK_OUT=tiles.out_width,
             BLOCK_DK=tiles.scores_chunk,
             num_warps=tiles.warps, num_stages=tiles.stages))


def embeddings_loss(z: torch.Tensor, c: torch.Tensor, codes: Codes, crops, inv_tau: float, with_output: bool,
                    splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, lse (M,), out (M, D) or (0, D))`` of ``z (M, D)``, ``c (K, D)`` and the codes'
    mass and projection partials; ``splits`` forces the number of prototype ranges."""
    rows, dim = z.shape
    code_splits, n_assign, batch = codes.mass.shape
    shape = LossForwardShape.of(rows, dim, c.shape[0], n_assign, batch, z.dtype, z.device, with_output, splits)
    f32 = dict(device=z.device, dtype=torch.float32)
    lse = torch.empty(rows, **f32)
    out = torch.empty((rows if with_output else 0, dim), **f32)
    block_loss = torch.empty(shape.row_blocks, **f32)
    loss = torch.empty((), **f32)
    counters = torch.zeros(shape.counters, device=z.device, dtype=torch.int32)
    partials = [None if s is None else torch.empty(s, **f32) for s in shape.partial_shapes()]
    buffers = (z, c, codes.mass, codes.projected, lse, out, block_loss, loss, counters, *partials)
    placeholders = [Buffer(i) if b is not None else None for i, b in enumerate(buffers)]
    if not with_output:
        placeholders[5] = None
    prepare_loss_forward(shape, z.dtype, crops, inv_tau, code_splits, *placeholders).run_tensors(buffers)
    return loss, lse, out
