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

import torch
import triton
import triton.language as tl

from ..kernels import Codes
from .launch import LOG2E, dot_precision, pack_crops
from .rows import DEVICE_LOG2E, predicted_codes, predicted_projection, predicted_weight
from .tiles import balanced_ranges, matmul_tiles, row_splits


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


def embeddings_loss_backward(grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: Codes, crops,
                             inv_tau: float, lse: torch.Tensor, out: torch.Tensor,
                             splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂z, ∂c)`` in the dtypes of z and c; ``grad`` a 0-d float32 tensor; ``splits`` forces the
    number of row ranges of the prototype gradient."""
    rows, dim = z.shape
    prototypes = c.shape[0]
    n_assign, batch = codes.mass.shape
    device = z.device
    tiles = matmul_tiles("backward", dim, z.dtype, dot_precision(z.dtype), prototypes, device)
    if splits is None:
        splits = row_splits(tiles, rows, prototypes, device)
    rows_per_split, splits = balanced_ranges(rows, tiles.block_rows, splits)
    prototype_programs = triton.cdiv(prototypes, tiles.block_k) * splits
    grad_z = torch.empty_like(z)
    grad_c = torch.empty_like(c)
    final = splits == 1
    partial = grad_c if final else torch.empty((splits, prototypes, dim), device=device, dtype=torch.float32)
    n_crops = rows // batch
    coef_scale = inv_tau / (n_assign * (n_crops - 1) * batch)
    grid = (prototype_programs + triton.cdiv(rows, tiles.block_rows),)
    _backward_kernel[grid](
        z, c, rows, prototypes, dim, codes.codes, codes.mass, codes.projected, batch, n_assign, pack_crops(crops),
        lse, out, grad, grad_z, grad_c, partial, inv_tau * LOG2E, coef_scale, rows_per_split, prototype_programs,
        FINAL=final, PRECISION=dot_precision(z.dtype),
        BLOCK_M=tiles.block_rows, BLOCK_K=tiles.block_k, BLOCK_D=tiles.block_d,
        num_warps=tiles.warps, num_stages=tiles.stages,
    )
    if not final:
        size = prototypes * dim
        block = 1024
        _prototype_grad_merge_kernel[(triton.cdiv(size, block),)](
            partial, grad, grad_c, size, splits, coef_scale, BLOCK=block, num_warps=4)
    return grad_z, grad_c
