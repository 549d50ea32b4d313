"""Loss backward from embeddings (``Kernels.embeddings_loss_backward``), one launch for both
gradients (plus a merge when the prototype gradient is split over rows).

∂C programs, one per (block of prototypes, row range), loop over rows recomputing the scores
(the flash-attention dV pass): ``∂c[k] = coef · Σ_m (w[m]·p[m, k] − Σ_{a: A[a]≠v} q_a[b, k]) · z[m]``,
the softmax and code terms combined before the tensor-core product, so the codes never need a
product of their own. ∂Z programs, one per block of rows, take the forward's attention output:
``∂z[m] = coef · (w[m]·out[m] − Σ_{a: A[a]≠v} projected[a, b])``. ``coef = grad · inv_tau / denom``
is read on the device (no host sync). Row ranges write partials that a merge kernel adds in order.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..kernels import Codes
from .launch import LOG2E, dot_precision, pack_crops
from .launcher import Buffer, PreparedLaunch
from .rows import DEVICE_LOG2E, predicted_codes, predicted_projection, predicted_weight
from .tiles import Tiles, balanced_ranges, matmul_tiles, row_splits


@triton.jit
def _backward_kernel(
    z_ptr, c_ptr, M, K, D,
    codes_ptr, mass_ptr, projected_ptr, B, n_assign, crops_packed,
    lse_ptr, out_ptr, grad_ptr, grad_z_ptr, grad_c_ptr, partial_ptr,
    scale_log2, coef_scale, rows_per_split, prototype_programs,
    FINAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims[None, :] < D
    coef = tl.load(grad_ptr) * coef_scale
    prototype_blocks = tl.cdiv(K, BLOCK_K)
    if pid < prototype_programs:  # ∂C for one block of prototypes over one row range
        pid_k = pid % prototype_blocks
        split = pid // prototype_blocks
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        col_mask = cols < K
        c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + dims[None, :], mask=col_mask[:, None] & dim_mask,
                    other=0.0)
        m_begin = split * rows_per_split
        m_end = tl.minimum(m_begin + rows_per_split, M)
        acc = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
        for m0 in range(m_begin, m_end, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_mask = rows < m_end
            crop = rows // B
            b = rows % B
            z = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + dims[None, :], mask=row_mask[:, None] & dim_mask,
                        other=0.0)
            lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0) * DEVICE_LOG2E
            weight = predicted_weight(mass_ptr, crops_packed, n_assign, crop, b, B, row_mask)
            s = tl.dot(z, tl.trans(c), input_precision=PRECISION) * scale_log2
            gradient = tl.exp2(s - lse[:, None]) * weight[:, None]  # masked rows have weight 0
            gradient -= predicted_codes(codes_ptr, crops_packed, n_assign, crop, b, B, K, cols, col_mask, row_mask)
            acc += tl.dot(tl.trans(gradient.to(z.dtype)), z, input_precision=PRECISION)
        c_tile = cols[:, None].to(tl.int64) * D + dims[None, :]
        if FINAL:
            tl.store(grad_c_ptr + c_tile, (coef * acc).to(grad_c_ptr.dtype.element_ty),
                     mask=col_mask[:, None] & dim_mask)
        else:
            tl.store(partial_ptr + split * K * D + c_tile, acc, mask=col_mask[:, None] & dim_mask)
    else:  # ∂Z for one block of rows, 32 columns at a time
        z_rows = (pid - prototype_programs) * BLOCK_M + tl.arange(0, BLOCK_M)
        z_mask = z_rows < M
        weight_z = predicted_weight(mass_ptr, crops_packed, n_assign, z_rows // B, z_rows % B, B, z_mask)
        for d0 in range(0, D, 32):
            chunk = d0 + tl.arange(0, 32)
            chunk_mask = z_mask[:, None] & (chunk[None, :] < D)
            z_tile = z_rows[:, None].to(tl.int64) * D + chunk[None, :]
            out = tl.load(out_ptr + z_tile, mask=chunk_mask, other=0.0)
            projection = predicted_projection(projected_ptr, crops_packed, n_assign, z_rows // B, z_rows % B, B, D,
                                              chunk, z_mask)
            grad_z = coef * (weight_z[:, None] * out - projection)
            tl.store(grad_z_ptr + z_tile, grad_z.to(grad_z_ptr.dtype.element_ty), mask=chunk_mask)


@triton.jit
def _prototype_grad_merge_kernel(partial_ptr, grad_ptr, grad_c_ptr, size, splits, coef_scale,
                                 BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < size
    total = tl.zeros((BLOCK,), tl.float32)
    for s in range(splits):  # a fixed order: deterministic
        total += tl.load(partial_ptr + s * size + offsets, mask=mask, other=0.0)
    coef = tl.load(grad_ptr) * coef_scale
    tl.store(grad_c_ptr + offsets, (coef * total).to(grad_c_ptr.dtype.element_ty), mask=mask)


MERGE_BLOCK = 1024


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


def prepare_backward(shape: BackwardShape, dtype: torch.dtype, crops, inv_tau: float, z, c, codes, mass, projected,
                     lse, out, grad, grad_z, grad_c, partial) -> list[PreparedLaunch]:
    """The backward, plus the ∂C merge when S > 1. Buffers: ``z``, ``c``, the codes bundle and the
    forward's ``lse``/``out`` in, ``grad`` the 0-d float32 upstream gradient; out ``grad_z``, ``grad_c``
    (dtypes of z and c) and ``partial`` (S, K, D) float32 (None when S = 1)."""
    tiles = shape.tiles
    final = shape.splits == 1
    prototype_programs = triton.cdiv(shape.prototypes, tiles.block_k) * shape.splits
    coef_scale = inv_tau / (shape.n_assign * (shape.rows // shape.batch - 1) * shape.batch)
    grid = (prototype_programs + triton.cdiv(shape.rows, tiles.block_rows),)
    backward = PreparedLaunch(_backward_kernel, grid, (
        z, c, shape.rows, shape.prototypes, shape.dim, codes, mass, projected, shape.batch, shape.n_assign,
        pack_crops(crops), lse, out, grad, grad_z, grad_c, grad_c if final else partial, inv_tau * LOG2E,
        coef_scale, shape.rows_per_split, prototype_programs),
        dict(FINAL=final, PRECISION=dot_precision(dtype), BLOCK_M=tiles.block_rows, BLOCK_K=tiles.block_k,
             BLOCK_D=tiles.block_d, num_warps=tiles.warps, num_stages=tiles.stages))
    if final:
        return [backward]
    size = shape.prototypes * shape.dim
    merge = PreparedLaunch(_prototype_grad_merge_kernel, (triton.cdiv(size, MERGE_BLOCK),),
                           (partial, grad, grad_c, size, shape.splits, coef_scale),
                           dict(BLOCK=MERGE_BLOCK, num_warps=4))
    return [backward, merge]


def embeddings_loss_backward(grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: Codes, crops,
                             inv_tau: float, lse: torch.Tensor, out: torch.Tensor,
                             splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂z, ∂c)`` in the dtypes of z and c; ``grad`` a 0-d float32 tensor; ``splits`` forces the
    number of row ranges of the prototype gradient."""
    rows, dim = z.shape
    n_assign, batch = codes.mass.shape
    shape = BackwardShape.of(rows, dim, c.shape[0], n_assign, batch, z.dtype, z.device, splits)
    grad_z = torch.empty_like(z)
    grad_c = torch.empty_like(c)
    partial_shape = shape.partial_shape()
    partial = None if partial_shape is None else torch.empty(partial_shape, device=z.device, dtype=torch.float32)
    buffers = (z, c, codes.codes, codes.mass, codes.projected, lse, out, grad, grad_z, grad_c, partial)
    placeholders = [Buffer(i) if b is not None else None for i, b in enumerate(buffers)]
    for launch in prepare_backward(shape, z.dtype, crops, inv_tau, *placeholders):
        launch.run_tensors(buffers)
    return grad_z, grad_c
