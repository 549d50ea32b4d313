"""Loss backward from embeddings (``Kernels.embeddings_loss_backward``), one launch for both
gradients.

∂C programs, one per (block of prototypes, row range), loop over rows recomputing the scores
(the flash-attention dV pass): ``∂c[k] = coef · Σ_m (w[m]·p[m, k] − Σ_{a: A[a]≠v} q_a[b, k]) · z[m]``,
the softmax and code terms combined before the tensor-core product, so the codes never need a
product of their own. ∂Z programs, one per block of rows, take the forward's attention output:
``∂z[m] = coef · (w[m]·out[m] − Σ_{a: A[a]≠v} projected[a, b])``. ``coef = grad · inv_tau / denom``
is read on the device (no host sync). Where prototype blocks are too few to fill the device, ∂C is split
over row ranges: each writes a partial, and the last of a block's ranges to finish adds them in order
(``tickets.last_to_arrive``: no merge launch, the same bits run to run). Where the tiles hold fewer ∂C
columns than D (``Tiles.block_out``), each part of the width recomputes the scores for its columns.
Where the tiles say ``transposed`` (fp32 operands), ∂C programs score (prototypes × rows), so that the
gradient tile enters ∂C's product as it is and a step may be 16 or 32 rows (wgmma's N, not its M).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..kernels import Codes
from .launch import LOG2E, dot_precision, pack_crops
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LOG2E, predicted_codes, predicted_projection, predicted_weight, scores_by_chunks
from .tickets import last_to_arrive
from .tiles import Tiles, balanced_ranges, matmul_tiles, row_splits


@triton.jit
def _backward_kernel(
    z_ptr, c_ptr, M, K, D,
    codes_ptr, mass_ptr, projected_ptr, B, n_assign, crops_packed, code_splits,
    lse_ptr, out_ptr, grad_ptr, grad_z_ptr, grad_c_ptr, partial_ptr, counter_ptr,
    scale_log2, coef_scale, rows_per_split, prototype_programs, splits, width_splits,
    FINAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_OUT: tl.constexpr,
    BLOCK_DK: tl.constexpr, TRANSPOSED: tl.constexpr,
):
    # float arguments arrive as fp64 from torch.compile's wrapper (fp32 from a direct launch): one type
    scale_log2 = tl.cast(scale_log2, tl.float32)
    coef_scale = tl.cast(coef_scale, tl.float32)
    pid = tl.program_id(0)
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims[None, :] < D
    coef = tl.load(grad_ptr) * coef_scale
    prototype_blocks = tl.cdiv(K, BLOCK_K)
    if pid < prototype_programs:  # ∂C for one block of prototypes, one row range and one part of the width
        pid_k = pid % prototype_blocks
        part_of_width = (pid // prototype_blocks) % width_splits  # ∂C columns [part·BLOCK_OUT, +BLOCK_OUT)
        split = pid // prototype_blocks // width_splits
        out_dims = part_of_width * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
        out_mask = out_dims[None, :] < D
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        if BLOCK_DK == BLOCK_D:  # resident; else the scores take D in chunks from memory (rows.scores_by_chunks)
            c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + dims[None, :], mask=col_mask[:, None] & dim_mask,
                        other=0.0)
        m_begin = split * rows_per_split
        m_end = tl.minimum(m_begin + rows_per_split, M)
        acc = tl.zeros((BLOCK_K, BLOCK_OUT), tl.float32)
        for m0 in range(m_begin, m_end, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_mask = rows < m_end
            crop = rows // B
            b = rows % B
            if BLOCK_DK == BLOCK_D:
                z = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + dims[None, :],
                            mask=row_mask[:, None] & dim_mask, other=0.0)
            lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0) * DEVICE_LOG2E
            weight = predicted_weight(mass_ptr, crops_packed, n_assign, crop, b, B, row_mask, code_splits)
            if TRANSPOSED:  # (prototypes × rows): dC's product takes the gradient as its first operand as it is
                if BLOCK_DK == BLOCK_D:
                    st = tl.dot(c, tl.trans(z), input_precision=PRECISION)
                else:
                    st = scores_by_chunks(c_ptr + cols.to(tl.int64) * D, col_mask, z_ptr + rows.to(tl.int64) * D,
                                          row_mask, D, BLOCK_D, BLOCK_DK, PRECISION)
                gradient_t = tl.exp2(st * scale_log2 - lse[None, :]) * weight[None, :]  # masked rows: weight 0
                gradient_t -= tl.trans(predicted_codes(codes_ptr, crops_packed, n_assign, crop, b, B, K, cols,
                                                       col_mask, row_mask))
            else:
                if BLOCK_DK == BLOCK_D:
                    s = tl.dot(z, tl.trans(c), input_precision=PRECISION)
                else:
                    s = scores_by_chunks(z_ptr + rows.to(tl.int64) * D, row_mask, c_ptr + cols.to(tl.int64) * D,
                                         col_mask, D, BLOCK_D, BLOCK_DK, PRECISION)
                s = s * scale_log2
                gradient = tl.exp2(s - lse[:, None]) * weight[:, None]  # masked rows have weight 0
                gradient -= predicted_codes(codes_ptr, crops_packed, n_assign, crop, b, B, K, cols, col_mask, row_mask)
            if BLOCK_OUT != BLOCK_D or BLOCK_DK != BLOCK_D:  # this part's columns of z (an L1/L2 hit)
                z = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + out_dims[None, :],
                            mask=row_mask[:, None] & out_mask, other=0.0)
            if TRANSPOSED:
                acc += tl.dot(gradient_t.to(z.dtype), z, input_precision=PRECISION)
            else:
                acc += tl.dot(tl.trans(gradient.to(z.dtype)), z, input_precision=PRECISION)
        c_tile = cols[:, None].to(tl.int64) * D + out_dims[None, :]
        c_mask = col_mask[:, None] & out_mask
        if FINAL:
            tl.store(grad_c_ptr + c_tile, (coef * acc).to(grad_c_ptr.dtype.element_ty), mask=c_mask)
        else:  # the block's last row range adds the S partials in order
            tl.store(partial_ptr + split * K * D + c_tile, acc, mask=c_mask)
            if last_to_arrive(counter_ptr + pid_k * width_splits + part_of_width, splits):
                total = tl.zeros((BLOCK_K, BLOCK_OUT), tl.float32)
                for s_ in range(splits):
                    total += tl.load(partial_ptr + s_ * K * D + c_tile, mask=c_mask, other=0.0, cache_modifier=".cg")
                tl.store(grad_c_ptr + c_tile, (coef * total).to(grad_c_ptr.dtype.element_ty), mask=c_mask)
    else:  # ∂Z for one block of rows, 32 columns at a time
        z_rows = (pid - prototype_programs) * BLOCK_M + tl.arange(0, BLOCK_M)
        z_mask = z_rows < M
        weight_z = predicted_weight(mass_ptr, crops_packed, n_assign, z_rows // B, z_rows % B, B, z_mask, code_splits)
        for d0 in range(0, D, 32):
            chunk = d0 + tl.arange(0, 32)
            chunk_mask = z_mask[:, None] & (chunk[None, :] < D)
            z_tile = z_rows[:, None].to(tl.int64) * D + chunk[None, :]
            out = tl.load(out_ptr + z_tile, mask=chunk_mask, other=0.0)
            projection = predicted_projection(projected_ptr, crops_packed, n_assign, z_rows // B, z_rows % B, B, D,
                                              chunk, z_mask, code_splits)
            grad_z = coef * (weight_z[:, None] * out - projection)
            tl.store(grad_z_ptr + z_tile, grad_z.to(grad_z_ptr.dtype.element_ty), mask=chunk_mask)


class BackwardShape(NamedTuple):
    """Sizes, tiles and splits of the loss backward for z (M, D), c (K, D) and |A| × B codes."""

    rows: int  # M
    dim: int  # D
    prototypes: int  # K
    n_assign: int
    batch: int
    tiles: Tiles
    splits: int  # row ranges of ∂C (1: no merge launch)
    rows_per_split: int

    @classmethod
    def of(cls, rows: int, dim: int, prototypes: int, n_assign: int, batch: int, dtype: torch.dtype,
           device: torch.device, splits: int | None = None) -> "BackwardShape":
        tiles = matmul_tiles("backward", dim, dtype, dot_precision(dtype), prototypes, device)
        if splits is None:
            splits = row_splits(tiles, rows, prototypes, device)
        rows_per_split, splits = balanced_ranges(rows, tiles.block_rows, splits)
        return cls(rows, dim, prototypes, n_assign, batch, tiles, splits, rows_per_split)

    def partial_shape(self) -> tuple | None:
        """Shape of the ∂C split partials (float32), None when S = 1."""
        return None if self.splits == 1 else (self.splits, self.prototypes, self.dim)

    @property
    def counters(self) -> int:
        """int32 tickets the launch needs, zero before it runs: one per block of prototypes and part of the width."""
        return triton.cdiv(self.prototypes, self.tiles.block_k) * self.tiles.width_splits


def prepare_backward(shape: BackwardShape, dtype: torch.dtype, crops, inv_tau: float, code_splits: int, z, c,
                     codes, mass, projected, lse, out, grad, grad_z, grad_c, partial, counters) -> PreparedLaunch:
    """The backward, one launch. Buffers: ``z``, ``c``, the codes bundle (mass and projection as
    ``code_splits`` partials) and the forward's ``lse``/``out`` in, ``grad`` the 0-d float32 upstream
    gradient; out ``grad_z``, ``grad_c`` (dtypes of z and c); ``partial`` (S, K, D) float32 and
    ``counters`` int32 (``shape.counters``, zero) when S > 1, else None."""
    tiles = shape.tiles
    final = shape.splits == 1
    prototype_programs = triton.cdiv(shape.prototypes, tiles.block_k) * tiles.width_splits * shape.splits
    coef_scale = inv_tau / (shape.n_assign * (shape.rows // shape.batch - 1) * shape.batch)
    grid = (prototype_programs + triton.cdiv(shape.rows, tiles.block_rows),)
    return PreparedLaunch(_backward_kernel, grid, (
        z, c, shape.rows, shape.prototypes, shape.dim, codes, mass, projected, shape.batch, shape.n_assign,
        pack_crops(crops), code_splits, lse, out, grad, grad_z, grad_c, grad_c if final else partial,
        grad if final else counters, inv_tau * LOG2E, coef_scale, shape.rows_per_split, prototype_programs,
        shape.splits, tiles.width_splits),
        dict(FINAL=final, PRECISION=dot_precision(dtype), BLOCK_M=tiles.block_rows, BLOCK_K=tiles.block_k,
             BLOCK_D=tiles.block_d, BLOCK_OUT=tiles.out_width, BLOCK_DK=tiles.scores_chunk,
             TRANSPOSED=tiles.transposed, num_warps=tiles.warps, num_stages=tiles.stages))


def embeddings_loss_backward(grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: Codes, crops,
                             inv_tau: float, lse: torch.Tensor, out: torch.Tensor,
                             splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂z, ∂c)`` in the dtypes of z and c; ``grad`` a 0-d float32 tensor; ``splits`` forces the
    number of row ranges of the prototype gradient."""
    rows, dim = z.shape
    code_splits, n_assign, batch = codes.mass.shape
    shape = BackwardShape.of(rows, dim, c.shape[0], n_assign, batch, z.dtype, z.device, splits)
    grad_z = torch.empty_like(z)
    grad_c = torch.empty_like(c)
    partial_shape = shape.partial_shape()
    partial = None if partial_shape is None else torch.empty(partial_shape, device=z.device, dtype=torch.float32)
    counters = None if partial_shape is None else torch.zeros(shape.counters, device=z.device, dtype=torch.int32)
    buffers = (z, c, codes.codes, codes.mass, codes.projected, lse, out, grad, grad_z, grad_c, partial, counters)
    placeholders = [Buffer(i) if b is not None else None for i, b in enumerate(buffers)]
    prepare_backward(shape, z.dtype, crops, inv_tau, code_splits, *placeholders).run_tensors(buffers)
    return grad_z, grad_c
