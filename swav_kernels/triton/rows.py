"""Device helpers shared by the Triton kernels: where a Sinkhorn row lives, which assign crops a
loss row predicts, and the column and row potentials from their split statistics
(``swav_kernels.kernels``).

A Sinkhorn row n of group g is queue row ``queue[g, n]`` for n < L, else batch row
``main[crop_g·B + n − L]`` (``SinkhornRows``); no kernel ever copies the rows into one buffer.
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .launch import alignment_of, dot_precision, pack_crops
from .tiles import Tiles, sinkhorn_tiles

DEVICE_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # constants inside kernels
DEVICE_LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def unpack_crop(packed, index):
    """Crop ``index`` of the packed crop list (8 bits each); packed < 0 is the identity."""
    shifted = (packed >> (8 * tl.minimum(index, 7))) & 255
    return tl.where(packed < 0, index, shifted)


@triton.jit
def row_starts(main_ptr, queue_ptr, g, crop, n, L, B, X):
    """Pointers to the first element of Sinkhorn rows ``n`` (a vector) of group g, each row X wide."""
    queue_row = (g * L + n).to(tl.int64) * X
    main_row = (crop * B + n - L).to(tl.int64) * X
    return tl.where(n < L, queue_ptr + queue_row, main_ptr + main_row)


@triton.jit
def row_pointers(main_ptr, queue_ptr, g, crop, n, cols, L, B, X):
    """Pointers to elements ``cols`` of Sinkhorn rows ``n`` (a vector) of group g, each row X wide. Not
    ``row_starts(...)[:, None] + cols``: that form compiles differently (the 16-bit row step at D = 256
    spills 344 B under triton 3.9)."""
    queue_row = (g * L + n).to(tl.int64) * X
    main_row = (crop * B + n - L).to(tl.int64) * X
    return tl.where((n < L)[:, None], queue_ptr + queue_row[:, None] + cols[None, :],
                    main_ptr + main_row[:, None] + cols[None, :])


@triton.jit
def scores_by_chunks(a_rows, a_mask, b_rows, b_mask, D, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
                     PRECISION: tl.constexpr):
    """``a · bᵀ`` in fp32, (len(a_rows) × len(b_rows)), for rows of width D that start at the pointers
    ``a_rows`` and ``b_rows``: the width in CHUNK-column steps, both operands loaded here, so that no
    (rows × D) operand stays live beside a kernel's accumulators. The chunks are added in order into
    one running sum (the same order in every kernel that takes the same CHUNK)."""
    x = tl.zeros((a_rows.shape[0], b_rows.shape[0]), tl.float32)
    for d0 in tl.static_range(0, BLOCK_D, CHUNK):
        dims = d0 + tl.arange(0, CHUNK)
        a = tl.load(a_rows[:, None] + dims[None, :], mask=a_mask[:, None] & (dims[None, :] < D), other=0.0)
        b = tl.load(b_rows[:, None] + dims[None, :], mask=b_mask[:, None] & (dims[None, :] < D), other=0.0)
        x = tl.dot(a, tl.trans(b), x, input_precision=PRECISION)
    return x


@triton.jit
def column_potential_log2(max_ptr, sum_ptr, g, cols, col_mask, S, G, K, log2_prototypes):
    """``a[g, cols]·log2(e)`` with ``a = −log K − LSE_s(max_s + log sumexp_s)`` over the S
    partials of ``ColumnStats`` (natural log, layout (S, G, K))."""
    top = tl.full(cols.shape, float("-inf"), tl.float32)
    for s in range(S):
        top = tl.maximum(top, tl.load(max_ptr + (s * G + g) * K + cols, mask=col_mask, other=float("-inf")))
    total = tl.zeros(cols.shape, tl.float32)
    for s in range(S):
        part_max = tl.load(max_ptr + (s * G + g) * K + cols, mask=col_mask, other=0.0)
        part_sum = tl.load(sum_ptr + (s * G + g) * K + cols, mask=col_mask, other=0.0)
        total += part_sum * tl.exp2((part_max - top) * DEVICE_LOG2E)
    return -log2_prototypes - (top * DEVICE_LOG2E + tl.log2(total))


@triton.jit
def row_lse_log2(max_ptr, sum_ptr, g, n, row_mask, R, G, N):
    """``(top, log2 Σ)`` with ``top + log2 Σ = log2 Σ_r sumexp_r·2^(max_r)`` over the R partials of
    ``RowStats`` (base 2, layout (R, G, N)): a row's log-sum-exp times log2(e), merged where it is read.
    ``top`` is the largest partial max unchanged, so a code formed as 2^((u − top) − log2 Σ) subtracts the
    very value the row step found as its row's max."""
    top = tl.full(n.shape, float("-inf"), tl.float32)
    for r in range(R):
        top = tl.maximum(top, tl.load(max_ptr + (r * G + g) * N + n, mask=row_mask, other=float("-inf")))
    safe = tl.where(top == float("-inf"), 0.0, top)
    total = tl.zeros(n.shape, tl.float32)
    for r in range(R):
        part_max = tl.load(max_ptr + (r * G + g) * N + n, mask=row_mask, other=float("-inf"))
        part_sum = tl.load(sum_ptr + (r * G + g) * N + n, mask=row_mask, other=0.0)
        total += part_sum * tl.exp2(part_max - safe)
    return safe, tl.log2(total)


@triton.jit
def row_potential_log2(max_ptr, sum_ptr, g, n, row_mask, R, G, N):
    """``b[g, n]·log2(e)`` with ``b = −LSE`` of the row step's partials (``row_lse_log2``)."""
    top, log_total = row_lse_log2(max_ptr, sum_ptr, g, n, row_mask, R, G, N)
    return -(top + log_total)


@triton.jit
def potential_tile(main_ptr, queue_ptr, c_ptr, rows, g, crop, n, row_mask, cols, col_mask, dims, L, B, K, D,
                   max_ptr, sum_ptr, S, groups, scale_log2, log2_prototypes,
                   RECOMPUTE: tl.constexpr, PRECISION: tl.constexpr, CHUNK: tl.constexpr):
    """``(u, c)`` for Sinkhorn rows ``n`` and prototypes ``cols``: ``u = (x/ε + a)·log2(e)`` (−inf past
    K), x recomputed as ``rows · cᵀ`` from the resident row tile and the prototype tile c loaded
    here (returned for further products), or CHUNK columns at a time from memory where CHUNK is less
    than the tile's width (``scores_by_chunks``; c is then unused, as it is when x is read from the
    stored scores)."""
    if RECOMPUTE and CHUNK < dims.shape[0]:
        c = tl.zeros((cols.shape[0], dims.shape[0]), rows.dtype)
        x = scores_by_chunks(row_starts(main_ptr, queue_ptr, g, crop, n, L, B, D), row_mask,
                             c_ptr + cols.to(tl.int64) * D, col_mask, D, dims.shape[0], CHUNK, PRECISION)
    elif RECOMPUTE:
        c = tl.load(c_ptr + cols[:, None].to(tl.int64) * D + dims[None, :],
                    mask=col_mask[:, None] & (dims[None, :] < D), other=0.0)
        x = tl.dot(rows, tl.trans(c), input_precision=PRECISION)
    else:
        c = tl.zeros((cols.shape[0], dims.shape[0]), rows.dtype)
        x = tl.load(row_pointers(main_ptr, queue_ptr, g, crop, n, cols, L, B, K),
                    mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
    a = column_potential_log2(max_ptr, sum_ptr, g, cols, col_mask, S, groups, K, log2_prototypes)
    return tl.where(col_mask[None, :], x * scale_log2 + a[None, :], float("-inf")), c


@triton.jit
def resident_rows(main_ptr, queue_ptr, g, crop, n, row_mask, dims, L, B, D, RECOMPUTE: tl.constexpr,
                  CHUNK: tl.constexpr):
    """The (rows × BLOCK_D) tile of Sinkhorn rows ``n`` a recomputing kernel keeps while the
    prototypes stream past (an unused zero tile when scores are read, or taken CHUNK columns at a
    time by ``potential_tile``)."""
    if RECOMPUTE and CHUNK == dims.shape[0]:
        rows = tl.load(row_pointers(main_ptr, queue_ptr, g, crop, n, dims, L, B, D),
                       mask=row_mask[:, None] & (dims[None, :] < D), other=0.0)
    else:
        rows = tl.zeros((n.shape[0], dims.shape[0]), main_ptr.dtype.element_ty)
    return rows


@triton.jit
def predicted_weight(mass_ptr, crops_packed, n_assign, crop, b, B, row_mask, S):
    """``w = Σ_{a: A[a] ≠ crop} Σ_s mass[s, a, b]`` for loss rows (crop, b): the code mass they predict,
    from the codes' S partials over prototype ranges, added in a fixed order."""
    weight = tl.zeros(b.shape, tl.float32)
    for s in range(S):
        for a in range(n_assign):
            keep = row_mask & (unpack_crop(crops_packed, a) != crop)
            weight += tl.load(mass_ptr + (s * n_assign + a) * B + b, mask=keep, other=0.0)
    return weight


@triton.jit
def predicted_codes(codes_ptr, crops_packed, n_assign, crop, b, B, K, cols, col_mask, row_mask):
    """``Σ_{a: A[a] ≠ crop} codes[a, b, cols]`` for loss rows (crop, b), a (rows, cols) tile."""
    total = tl.zeros((b.shape[0], cols.shape[0]), tl.float32)
    for a in range(n_assign):
        keep = row_mask & (unpack_crop(crops_packed, a) != crop)
        offsets = ((a * B + b).to(tl.int64) * K)[:, None] + cols[None, :]
        total += tl.load(codes_ptr + offsets, mask=keep[:, None] & col_mask[None, :], other=0.0)
    return total


@triton.jit
def predicted_projection(projected_ptr, crops_packed, n_assign, crop, b, B, D, dims, row_mask, S):
    """``Σ_{a: A[a] ≠ crop} Σ_s projected[s, a, b, :]`` for loss rows (crop, b), a (rows, BLOCK_D) tile."""
    total = tl.zeros((b.shape[0], dims.shape[0]), tl.float32)
    for s in range(S):
        for a in range(n_assign):
            keep = row_mask & (unpack_crop(crops_packed, a) != crop)
            offsets = (((s * n_assign + a) * B + b).to(tl.int64) * D)[:, None] + dims[None, :]
            total += tl.load(projected_ptr + offsets, mask=keep[:, None] & (dims < D)[None, :], other=0.0)
    return total


class RowShape(NamedTuple):
    """Host side of the same layout: the facts of a ``SinkhornRows`` the three Sinkhorn kernels are
    launched with (no tensors: a plan keeps this and fills the buffers at each call)."""

    groups: int  # G
    queue_rows: int  # L
    batch: int  # B
    rows: int  # N = L + B
    prototypes: int  # K
    dim: int  # D (1 when the rows are scores)
    packed_crops: int
    recompute: bool  # rows are embeddings, scored against the prototypes in every pass
    dtype: torch.dtype
    precision: str  # tl.dot input precision
    device: torch.device

    @classmethod
    def of(cls, rows) -> "RowShape":
        recompute = rows.prototypes is not None
        return cls(rows.groups, rows.queue_rows, rows.batch, rows.rows, rows.prototype_count,
                   rows.main.shape[1] if recompute else 1, pack_crops(rows.crops), recompute, rows.main.dtype,
                   dot_precision(rows.main.dtype), rows.main.device)

    def tiles(self, kernel: str) -> Tiles:
        """Tiles of ``kernel`` ("column", "row" or "codes", which covers the batch rows only)."""
        active_rows = self.groups * (self.batch if kernel == "codes" else self.rows)
        return sinkhorn_tiles(kernel, self.recompute, self.dim, self.dtype, self.precision, active_rows,
                              self.prototypes, self.device, groups=self.groups)

    @property
    def k_align(self) -> int:
        """The largest power of two up to 16 that divides K: the kernels take K as K/k_align units of
        k_align, so that the compiler sees every row of stored scores start on a k_align boundary."""
        return alignment_of(self.prototypes)

    def arguments(self, main, queue, prototypes) -> tuple:
        """(main, queue, prototypes; N, L, B, K / k_align, D, packed crops) in kernel order. ``queue`` and
        ``prototypes`` may be any buffer when absent (L = 0, or scores): they are never read then."""
        return (main, queue, prototypes, self.rows, self.queue_rows, self.batch, self.prototypes // self.k_align,
                self.dim, self.packed_crops)

    @staticmethod
    def tensors(rows) -> tuple:
        """The three row buffers of ``rows`` (main standing in for an absent queue or prototypes)."""
        return (rows.main, rows.queue if rows.queue is not None else rows.main,
                rows.prototypes if rows.prototypes is not None else rows.main)
