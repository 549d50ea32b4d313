"""The feature queue's update (``SwAVLoss``) in one launch: shift every queue ``(G, L, D)`` down by
B rows and write the batch rows of each assign crop at the front, read straight from the crop-major
embeddings (facebookresearch/swav: ``queue[i, bs:] = queue[i, :-bs]; queue[i, :bs] = embedding``).

The shift is in place. Each program owns a strip of columns of one group, so no two programs
touch the same element, and moves it from the bottom up in chunks of at most B rows: a chunk is
loaded, the program waits at a barrier, then stores it B rows lower, so no store overwrites a
row that a later chunk has yet to read.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launcher
from .launch import pack_crops, stream_of
from .launcher import Buffer, PreparedLaunch
from .rows import unpack_crop

BLOCK_COLUMNS = 32


@triton.jit
def _queue_shift_kernel(queue_ptr, z_ptr, L, B, D, crops_packed, kept_rows,
                        BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    g = tl.program_id(0)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_mask = dims < D
    base = queue_ptr + g.to(tl.int64) * L * D
    # rows kept_rows−1 … 0 move to rows kept_rows−1+B … B, the bottom chunk first
    for step in range(0, tl.cdiv(kept_rows, BLOCK_ROWS)):
        top = tl.maximum(kept_rows - (step + 1) * BLOCK_ROWS, 0)
        rows = top + tl.arange(0, BLOCK_ROWS)
        mask = (rows < kept_rows - step * BLOCK_ROWS)[:, None] & dim_mask[None, :]
        values = tl.load(base + rows[:, None].to(tl.int64) * D + dims[None, :], mask=mask, other=0.0)
        tl.debug_barrier()
        tl.store(base + (rows + B)[:, None].to(tl.int64) * D + dims[None, :], values, mask=mask)
        tl.debug_barrier()
    crop = unpack_crop(crops_packed, g)
    front = tl.minimum(B, L)
    for j0 in range(0, front, BLOCK_ROWS):
        j = j0 + tl.arange(0, BLOCK_ROWS)
        mask = (j < front)[:, None] & dim_mask[None, :]
        values = tl.load(z_ptr + (crop * B + j)[:, None].to(tl.int64) * D + dims[None, :], mask=mask, other=0.0)
        tl.store(base + j[:, None].to(tl.int64) * D + dims[None, :], values.to(queue_ptr.dtype.element_ty), mask=mask)


def prepare_shift_queue(groups: int, length: int, dim: int, batch: int, crops, queue, embeddings) -> PreparedLaunch:
    """The shift of a ``(groups, length, dim)`` queue by ``batch`` rows; buffers ``queue`` and the
    crop-major ``embeddings``."""
    kept = max(length - batch, 0)
    block_rows = min(64, 1 << (batch.bit_length() - 1))  # ≤ B rows: a chunk never overlaps its destination
    grid = (groups, triton.cdiv(dim, BLOCK_COLUMNS))
    return PreparedLaunch(_queue_shift_kernel, grid, (queue, embeddings, length, batch, dim, pack_crops(crops), kept),
                          dict(BLOCK_ROWS=block_rows, BLOCK_D=BLOCK_COLUMNS, num_warps=4))


_PREPARED: dict = {}  # (shapes, dtypes, device, alignment, crops, batch) -> PreparedLaunch


def shift_queue(queue: torch.Tensor, embeddings: torch.Tensor, crops, batch: int) -> None:
    """In place: ``queue (G, L, D)`` shifted down by ``batch`` rows, with rows
    ``embeddings[crops[g]·B : crops[g]·B + B]`` (the first L of them) at the front of queue g. The launch
    is prepared once per signature and then goes straight to the compiled kernel."""
    key = (queue.shape, queue.dtype, embeddings.shape, embeddings.dtype, queue.device, queue.data_ptr() & 15,
           embeddings.data_ptr() & 15, tuple(crops), batch)
    launch = _PREPARED.get(key)
    if launch is None:
        if len(_PREPARED) >= 256:
            _PREPARED.clear()
        groups, length, dim = queue.shape
        launch = _PREPARED[key] = prepare_shift_queue(groups, length, dim, batch, crops, Buffer(0), Buffer(1))
    if launch.ready and not launcher.hooks_installed():
        launch.direct(stream_of(queue.device), (queue.data_ptr(), embeddings.data_ptr()))
    else:
        launch.run_tensors((queue, embeddings))
