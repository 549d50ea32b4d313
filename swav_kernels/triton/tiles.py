"""Tile sizes, warps, stages and split counts of every Triton kernel: all tuning in one place.

Each choice is a fixed rule of the kernel, the operands' dtype and dot precision, the embedding
width, the device's architecture and the problem's size, never the winner of a timing race: a
result depends only on its inputs (bitwise, run to run) and a captured CUDA graph replays the
launches it captured. Everything that changes the order of a sum (tiles along K or D, split
counts) is decided here.

The tables come from compiling candidates for sm_80 and sm_90 through the real launch path
(``swav-bench --plan``, the null CUDA driver) and keeping the first, largest first, that fits shared
memory with no register spill, and on sm_90 multiplies on wgmma (≥ 64 rows per warpgroup), under
triton 3.6 (the GPU machine's), 3.8 and 3.9 (CI's), FP fusion on: register allocation differs
between them, and a tile that fits one can spill on another. ``tests/test_triton_compile.py`` compiles what
these rules pick at the DESIGN.md §5 shapes on every CI run and fails on any spill, any sm_90 product
off wgmma and any under-filled grid that ``KNOWN_SHORTFALLS`` below does not document. Not yet timed
on a GPU: tune here.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .launch import capability, cdiv, next_power_of_2, target_programs

MAX_COLUMN_SPLITS = 8  # the next Sinkhorn launch merges this many column partials per tile
MAX_ROW_SPLITS = 32  # the next Sinkhorn launch merges this many row partials per row
MAX_CODE_SPLITS = 32  # the loss kernels merge this many partials of the codes' mass and projection
MAX_SPLITS = 32


class Tiles(NamedTuple):
    block_rows: int  # rows of z (or Sinkhorn rows) per program or per step
    block_k: int  # prototypes per step (per program for the prototype gradient)
    block_d: int  # the whole embedding width, padded to a power of two (≥ 16 for tl.dot)
    warps: int
    stages: int
    block_out: int = 0  # output columns per program of a (rows × D) accumulator; 0: all of block_d
    block_dk: int = 0  # columns of D per step of the scores product; 0: all of block_d, the operand resident
    transposed: bool = False  # the backward scores (prototypes × rows): ∂C's product takes them untransposed

    @property
    def out_width(self) -> int:
        """Columns of the (rows × D) fp32 accumulator one program holds (codes·C, softmax·C, ∂C)."""
        return self.block_out or self.block_d

    @property
    def scores_chunk(self) -> int:
        """Columns of D per step of the scores product (all of D: the loop-invariant operand stays resident)."""
        return min(self.block_dk or self.block_d, self.block_d)

    @property
    def width_splits(self) -> int:
        """Programs that share one accumulator's width, each recomputing the same scores for its columns."""
        return self.block_d // self.out_width


# (kernel, operands, width) -> (block_rows, block_k, warps, stages[, block_out]); operands "16bit" (fp16/bf16),
# "tf32" or "tf32x3" (fp32 inputs); width 128 for D ≤ 128, 256 for D ≤ 256 (wider D uses the 256
# entry: correct, untuned, may spill). Kernels: the Sinkhorn column step, row step and codes, the
# loss forward and the loss backward (block_rows = rows per step, block_k = prototypes per program).
# The column step multiplies (prototypes × rows), block_k being wgmma's M: ≥ 64 on sm_90. block_out (codes,
# forward, backward): columns of the (rows × D) fp32 accumulator per program, where all of D would spill
# or leave wgmma; the D / block_out programs that share a block each recompute its scores (FLOPs the
# plan and the bench count).
SM90 = {
    ("column", "16bit", 128): (64, 128, 8, 3), ("column", "16bit", 256): (64, 64, 8, 3),
    ("column", "tf32", 128): (64, 64, 4, 2), ("column", "tf32", 256): (32, 64, 4, 2),
    ("column", "tf32x3", 128): (32, 64, 4, 2), ("column", "tf32x3", 256): (32, 64, 4, 2),
    ("row", "16bit", 128): (128, 64, 8, 3), ("row", "16bit", 256): (128, 64, 8, 3),
    ("row", "tf32", 128): (64, 64, 4, 2), ("row", "tf32", 256): (64, 64, 4, 2),
    ("row", "tf32x3", 128): (64, 64, 4, 2), ("row", "tf32x3", 256): (64, 32, 8, 2),
    ("codes", "16bit", 128): (64, 32, 8, 3), ("codes", "16bit", 256): (128, 32, 8, 3, 128),
    ("codes", "tf32", 128): (64, 32, 4, 2), ("codes", "tf32", 256): (64, 32, 8, 2, 128),
    ("codes", "tf32x3", 128): (64, 32, 4, 2, 64), ("codes", "tf32x3", 256): (64, 16, 4, 1, 64),
    ("forward", "16bit", 128): (128, 64, 8, 3), ("forward", "16bit", 256): (64, 64, 8, 3),
    ("forward", "tf32", 128): (64, 32, 8, 2), ("forward", "tf32", 256): (128, 32, 8, 2, 128),
    ("forward", "tf32x3", 128): (64, 32, 4, 2, 64), ("forward", "tf32x3", 256): (64, 32, 4, 1, 128),
    ("backward", "16bit", 128): (128, 64, 8, 3), ("backward", "16bit", 256): (128, 64, 8, 3),
    ("backward", "tf32", 128): (64, 64, 4, 2, 64), ("backward", "tf32", 256): (32, 64, 4, 2, 128),
    ("backward", "tf32x3", 128): (32, 64, 4, 2, 64), ("backward", "tf32x3", 256): (32, 64, 4, 2, 128),
}
SM80 = {
    ("column", "16bit", 128): (128, 64, 8, 3), ("column", "16bit", 256): (64, 32, 4, 3),
    ("column", "tf32", 128): (64, 64, 4, 2), ("column", "tf32", 256): (32, 64, 4, 2),
    ("column", "tf32x3", 128): (64, 16, 4, 2), ("column", "tf32x3", 256): (32, 16, 4, 2),
    ("row", "16bit", 128): (128, 64, 8, 3), ("row", "16bit", 256): (64, 64, 8, 2),
    ("row", "tf32", 128): (64, 64, 4, 2), ("row", "tf32", 256): (64, 32, 8, 2),
    ("row", "tf32x3", 128): (32, 16, 4, 2), ("row", "tf32x3", 256): (16, 32, 4, 2),
    ("codes", "16bit", 128): (64, 32, 8, 3), ("codes", "16bit", 256): (64, 32, 8, 3),
    ("codes", "tf32", 128): (64, 32, 8, 2), ("codes", "tf32", 256): (32, 32, 8, 2),
    ("codes", "tf32x3", 128): (16, 32, 4, 2), ("codes", "tf32x3", 256): (16, 16, 4, 1),
    ("forward", "16bit", 128): (64, 64, 8, 3), ("forward", "16bit", 256): (32, 32, 4, 2),
    ("forward", "tf32", 128): (64, 32, 4, 2), ("forward", "tf32", 256): (32, 32, 8, 2),
    ("forward", "tf32x3", 128): (16, 32, 4, 2), ("forward", "tf32x3", 256): (16, 32, 4, 2),
    ("backward", "16bit", 128): (64, 64, 8, 3), ("backward", "16bit", 256): (32, 32, 8, 2),
    ("backward", "tf32", 128): (64, 32, 8, 2), ("backward", "tf32", 256): (32, 32, 8, 2),
    ("backward", "tf32x3", 128): (16, 16, 8, 1), ("backward", "tf32x3", 256): (16, 32, 4, 1),
}
# (kernel, operands, width) -> columns of D per step of the scores product (``Tiles.block_dk``) where a
# resident (rows × D) fp32 operand would spill or leave wgmma; the row step and the codes take the same
# chunk (the codes recompute the row step's u by the same instructions: DESIGN's precision rule).
SM90_SCORES_CHUNK = {
    ("column", "tf32x3", 256): 64, ("row", "tf32x3", 256): 32, ("codes", "tf32x3", 256): 32,
    ("forward", "tf32x3", 256): 64, ("backward", "tf32", 256): 64, ("backward", "tf32x3", 256): 64,
}
SM80_SCORES_CHUNK = {
    ("row", "tf32x3", 256): 32, ("codes", "tf32x3", 256): 32, ("forward", "tf32x3", 256): 64,
    ("backward", "tf32x3", 256): 64,
}
# Backward entries whose ∂C programs score (prototypes × rows) (``Tiles.transposed``): ∂C's product then takes
# the gradient tile as its first operand without a transpose, and the rows per step are wgmma's N (16 or 32
# allowed), not its M; fp32 operands only (the 16-bit backward is on wgmma without spills as it is).
SM90_TRANSPOSED = {("backward", "tf32", 256), ("backward", "tf32x3", 128), ("backward", "tf32x3", 256)}
SM80_TRANSPOSED = {("backward", "tf32x3", 256)}
# Breaches of DESIGN §5a's kernel rules (``bench.kernel_rules``) that no tile of the tables removes, each with
# its reason: (arch, path, family, operands, width, rule) -> why. ``tests/test_triton_compile.py`` fails on any
# breach not listed here.
KNOWN_SHORTFALLS: dict = {}  # none today: every launch at the DESIGN §5 shapes meets the rules (triton 3.6-3.9)


def architecture(device: torch.device) -> int:
    """80 (Ampere tables) below compute capability 9.0, else 90; the interpreter uses 90's."""
    return 80 if capability(device) < 90 else 90


def operands(dtype: torch.dtype, precision: str) -> str:
    return precision if dtype == torch.float32 else "16bit"


def width(dim: int) -> int:
    return max(16, next_power_of_2(dim))


def matmul_tiles(kernel: str, dim: int, dtype: torch.dtype, precision: str, rows: int,
                 device: torch.device, arch: int | None = None) -> Tiles:
    """Tiles of a kernel that multiplies rows of width D by prototypes on tensor cores: the table's, for
    every problem size (``rows`` is kept for the callers' symmetry). Where a launch's tiles are too few to
    give every multiprocessor a program, the launch splits its other dimension (``column_splits``,
    ``sinkhorn_row_splits``, ``key_splits``, ``row_splits``) rather than shrinking its tiles: smaller
    tiles would leave wgmma for mma."""
    arch = architecture(device) if arch is None else arch
    table = SM80 if arch < 90 else SM90
    key = (kernel, operands(dtype, precision), 128 if dim <= 128 else 256)
    block_rows, block_k, warps, stages, *out = table[key]
    chunk = (SM80_SCORES_CHUNK if arch < 90 else SM90_SCORES_CHUNK).get(key, 0)
    transposed = key in (SM80_TRANSPOSED if arch < 90 else SM90_TRANSPOSED)
    return Tiles(block_rows, block_k, width(dim), warps, stages, min(out[0], width(dim)) if out else 0, chunk,
                 transposed)


def streaming_tiles(prototypes: int, rows_first: bool, rows: int = 0, groups: int = 1,
                    device: torch.device | None = None) -> Tiles:
    """Tiles of the kernels that stream stored scores (memory-bound, no matmul).

    Row kernels (``rows_first``) read whole rows: up to 16 rows × up to 256 columns per step with 8 warps
    (with 4, ptxas under triton 3.6 kept 12-28 bytes in local memory), fewer rows per program where the
    ``rows`` of each of the ``groups`` are too few to give every multiprocessor a program (down to 2). Column kernels read a 128-wide column strip, 32 rows per step (256 contiguous
    bytes of bf16, 512 of fp32, per row).
    """
    if rows_first:
        block_rows = 16
        if device is not None:
            one_wave = target_programs(device) // 2
            while block_rows > 2 and groups * cdiv(rows, block_rows) < one_wave:
                block_rows //= 2
        return Tiles(block_rows, min(256, max(16, next_power_of_2(prototypes))), 16, 8, 2)
    return Tiles(32, min(128, max(16, next_power_of_2(prototypes))), 16, 4, 2)


def sinkhorn_tiles(kernel: str, recompute: bool, dim: int, dtype: torch.dtype, precision: str, rows: int,
                   prototypes: int, device: torch.device, arch: int | None = None, groups: int = 1) -> Tiles:
    """Tiles of the Sinkhorn ``kernel`` ("column", "row" or "codes") over ``rows`` rows in all (of
    ``groups`` problems)."""
    if recompute:
        return matmul_tiles(kernel, dim, dtype, precision, rows, device, arch)
    return streaming_tiles(prototypes, kernel != "column", cdiv(rows, groups), groups, device)


def column_splits(tiles: Tiles, groups: int, rows: int, prototypes: int, device: torch.device) -> int:
    """Row ranges of the Sinkhorn column step: enough programs to fill the device, at most
    ``MAX_COLUMN_SPLITS`` (the next launch merges them), each range at least one row block."""
    programs = groups * cdiv(prototypes, tiles.block_k)
    wanted = cdiv(target_programs(device), programs)
    return max(1, min(MAX_COLUMN_SPLITS, wanted, cdiv(rows, tiles.block_rows)))


def sinkhorn_row_splits(tiles: Tiles, row_blocks: int, prototypes: int, device: torch.device,
                        limit: int = MAX_ROW_SPLITS) -> int:
    """Prototype ranges of a Sinkhorn launch that sweeps rows (the row step, the codes): only where its
    ``row_blocks`` (all groups) are too few to fill the device, at most ``limit`` (what the reader merges)."""
    wanted = cdiv(target_programs(device), row_blocks)
    return max(1, min(limit, wanted, cdiv(prototypes, tiles.block_k)))


def key_splits(tiles: Tiles, rows: int, prototypes: int, device: torch.device) -> int:
    """Prototype ranges of the loss forward (flash-decoding): only where row blocks are few."""
    row_blocks = cdiv(rows, tiles.block_rows) * tiles.width_splits
    wanted = cdiv(target_programs(device), row_blocks)
    return max(1, min(MAX_SPLITS, wanted, cdiv(prototypes, tiles.block_k)))


def row_splits(tiles: Tiles, rows: int, prototypes: int, device: torch.device) -> int:
    """Row ranges of the prototype gradient: only where prototype blocks are few."""
    prototype_blocks = cdiv(prototypes, tiles.block_k) * tiles.width_splits
    wanted = cdiv(target_programs(device), prototype_blocks)
    return max(1, min(MAX_SPLITS, wanted, cdiv(rows, tiles.block_rows)))


def balanced_ranges(count: int, block: int, splits: int) -> tuple[int, int]:
    """(items per range, number of ranges) for ``splits`` ranges of whole blocks over ``count`` items;
    every range is non-empty."""
    per_range = cdiv(cdiv(count, block), splits) * block
    return per_range, cdiv(count, per_range)
