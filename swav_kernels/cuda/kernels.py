"""``CudaKernels``: the kernel contract of ``swav_kernels.kernels`` on the CUDA C++ kernels
of csrc/ (extension ``swav_kernels._C``).

Each method validates its tensors (CUDA device, fp32/fp16/bf16, contiguous, shapes) before
any launch, allocates outputs and scratch with PyTorch, and launches on PyTorch's current
stream of the input's device. The formulas are those of the contract's docstrings.
Launch-configuration policy (how finely a reduction is split across blocks) lives here;
the bindings validate that the scratch buffers they are given are large enough.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..kernel_checks import KERNEL_DTYPES, check_finite_float, check_input, check_int, check_shape
from ..validation import check_same_dtype
from . import extension
from .launch import multiprocessor_count, stream_handle, workspace

_F32 = dict(dtype=torch.float32)


def _nonempty(name: str, value: torch.Tensor) -> None:
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")


class CudaKernels:
    name = "cuda"
    device_type = "cuda"  # the device of every tensor argument

    # ---- where and how launches happen (the CPU emulation in tests/ replaces these) --------

    def _extension(self):
        return extension.extension()

    def _launch_guard(self, device: torch.device):
        """Context in which ``device`` is the current CUDA device."""
        return torch.cuda.device(device)

    def _stream(self, device: torch.device) -> int:
        return stream_handle(device)

    def _target_blocks(self, device: torch.device) -> int:
        """Blocks a launch should offer to fill the GPU: two per multiprocessor."""
        return 2 * multiprocessor_count(device.index if device.index is not None else torch.cuda.current_device())

    def _input(self, name: str, value, ndim: int, dtype: torch.dtype | None = None, like=None) -> torch.Tensor:
        return check_input(name, value, ndim, dtype, like, device_type=self.device_type)

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        device = torch.device(device)
        reason = extension.unavailable_reason()
        if reason is not None:
            return reason
        if dtype not in KERNEL_DTYPES:
            return f"no CUDA kernels for {dtype} (float32, float16 and bfloat16 only)"
        if device.type != "cuda":
            reason = f"the CUDA kernels run on CUDA tensors, not on {device.type} tensors"
            if not torch.cuda.is_available():
                reason += "; no CUDA GPU is visible to torch on this machine"
            return reason
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch on this machine"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"the CUDA kernels need compute capability >= 8.0; {device} has {major}.{minor}"
        return None

    # ---- launch configuration -----------------------------------------------------------

    def _rows_per_block(self, groups: int, rows: int, device: torch.device) -> int:
        """Sinkhorn rows per block: the largest of 64, 32, 16, 8 that still fills the GPU."""
        rows_per_block = self._extension().SINKHORN_MAX_ROWS_PER_BLOCK
        while rows_per_block > 8 and groups * math.ceil(rows / rows_per_block) < self._target_blocks(device):
            rows_per_block //= 2
        return rows_per_block

    def _key_splits(self, query_rows: int, key_rows: int, slices: int, device: torch.device) -> int:
        """Blocks sharing one query tile's reduction over the keys: enough to fill the GPU,
        each with at least two key tiles."""
        ext = self._extension()
        blocks = math.ceil(query_rows / ext.SCORE_TILE_ROWS) * slices
        wanted = math.ceil(self._target_blocks(device) / blocks)
        most = math.ceil(key_rows / (2 * ext.SCORE_TILE_KEYS))
        return max(1, min(wanted, most, 65535))

    # ---- family 2: Sinkhorn ---------------------------------------------------------------

    def _check_sinkhorn_scores(self, x) -> torch.Tensor:
        x = self._input("x", x, 3)
        _nonempty("x", x)
        return x

    def sinkhorn_column_init(self, x: torch.Tensor, inv_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x (G, N, K) → (col_max, col_sum), both (G, K) float32; see the contract."""
        x = self._check_sinkhorn_scores(x)
        inv_eps = check_finite_float("inv_eps", inv_eps, positive=True)
        groups, rows, cols = x.shape
        ext = self._extension()
        rows_per_block = self._rows_per_block(groups, rows, x.device)
        col_max = torch.empty((groups, cols), device=x.device, **_F32)
        col_sum = torch.empty((groups, cols), device=x.device, **_F32)
        scratch = workspace(ext.sinkhorn_column_init_workspace(groups, rows, cols, rows_per_block), x.device)
        with self._launch_guard(x.device):
            ext.sinkhorn_column_init(
                x.data_ptr(), groups, rows, cols, rows * cols, cols, KERNEL_DTYPES[x.dtype], inv_eps, rows_per_block,
                col_max.data_ptr(), col_sum.data_ptr(), scratch.data_ptr(), scratch.numel(), self._stream(x.device),
            )
        return col_max, col_sum

    def sinkhorn_row_step(self, x: torch.Tensor, inv_eps: float, col_potential: torch.Tensor, log_rows_total: float,
                          normalize_rows: bool, want_column_sums: bool,
                          codes_from_row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x (G, N, K), col_potential (G, K) float32 → (column_sums (G, K) or (G, 0),
        codes (G, N − codes_from_row, K) or (G, 0, K)), float32; see the contract."""
        x = self._check_sinkhorn_scores(x)
        groups, rows, cols = x.shape
        col_potential = self._input("col_potential", col_potential, 2, torch.float32, like=x)
        check_shape("col_potential", col_potential, (groups, cols))
        inv_eps = check_finite_float("inv_eps", inv_eps, positive=True)
        log_rows_total = check_finite_float("log_rows_total", log_rows_total)
        codes_from_row = check_int("codes_from_row", codes_from_row)
        if codes_from_row > rows:
            raise ValueError(f"codes_from_row must be <= the {rows} rows of x, got {codes_from_row}")
        code_rows = rows - codes_from_row if codes_from_row >= 0 else 0
        want_column_sums = bool(want_column_sums)
        column_sums = torch.empty((groups, cols if want_column_sums else 0), device=x.device, **_F32)
        codes = torch.empty((groups, code_rows, cols), device=x.device, **_F32)
        if not want_column_sums and code_rows == 0:
            return column_sums, codes
        ext = self._extension()
        rows_per_block = self._rows_per_block(groups, rows, x.device)
        scratch = workspace(
            ext.sinkhorn_row_step_workspace(groups, rows, cols, rows_per_block, want_column_sums), x.device
        )
        with self._launch_guard(x.device):
            ext.sinkhorn_row_step(
                x.data_ptr(), groups, rows, cols, rows * cols, cols, KERNEL_DTYPES[x.dtype], inv_eps,
                col_potential.data_ptr(), log_rows_total, bool(normalize_rows), rows_per_block,
                column_sums.data_ptr() if want_column_sums else 0, codes.data_ptr() if code_rows else 0,
                codes_from_row if code_rows else 0, scratch.data_ptr(), scratch.numel(), self._stream(x.device),
            )
        return column_sums, codes

    # ---- family 1: prototype scoring + temperature softmax --------------------------------

    def _check_operands(self, z, c) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._input("z", z, 2)
        c = self._input("c", c, 2, like=z)
        check_same_dtype("c", c, "z", z)
        if c.shape[1] != z.shape[1]:
            raise ValueError(f"c must have shape (K, D={z.shape[1]}) to match z, got {tuple(c.shape)}")
        _nonempty("z", z)
        _nonempty("c", c)
        return z, c

    def scores_logsumexp(self, z: torch.Tensor, c: torch.Tensor, inv_tau: float,
                         with_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """z (M, D), c (K, D) → (lse (M,), out (M, D) or (0, D)), float32; see the contract."""
        z, c = self._check_operands(z, c)
        inv_tau = check_finite_float("inv_tau", inv_tau, positive=True)
        (rows, dim), prototypes = z.shape, c.shape[0]
        with_output = bool(with_output)
        ext = self._extension()
        splits = self._key_splits(rows, prototypes, 1, z.device)
        lse = torch.empty(rows, device=z.device, **_F32)
        out = torch.empty((rows if with_output else 0, dim), device=z.device, **_F32)
        scratch = workspace(ext.scores_logsumexp_workspace(rows, dim, splits, with_output), z.device)
        with self._launch_guard(z.device):
            ext.scores_logsumexp(
                z.data_ptr(), c.data_ptr(), rows, prototypes, dim, dim, dim, KERNEL_DTYPES[z.dtype], inv_tau,
                lse.data_ptr(), out.data_ptr() if with_output else 0, splits, scratch.data_ptr(), scratch.numel(),
                self._stream(z.device),
            )
        return lse, out

    def softmax_prototype_grad(self, z: torch.Tensor, c: torch.Tensor, lse: torch.Tensor, row_weight: torch.Tensor,
                               inv_tau: float) -> torch.Tensor:
        """z (M, D), c (K, D), lse and row_weight (M,) float32 → (K, D) float32; see the contract."""
        z, c = self._check_operands(z, c)
        (rows, dim), prototypes = z.shape, c.shape[0]
        lse = self._input("lse", lse, 1, torch.float32, like=z)
        check_shape("lse", lse, (rows,))
        row_weight = self._input("row_weight", row_weight, 1, torch.float32, like=z)
        check_shape("row_weight", row_weight, (rows,))
        inv_tau = check_finite_float("inv_tau", inv_tau, positive=True)
        ext = self._extension()
        splits = self._key_splits(prototypes, rows, math.ceil(dim / ext.SCORE_TILE_SLICE), z.device)
        grad = torch.empty((prototypes, dim), device=z.device, **_F32)
        scratch = workspace(ext.softmax_prototype_grad_workspace(prototypes, dim, splits), z.device)
        with self._launch_guard(z.device):
            ext.softmax_prototype_grad(
                z.data_ptr(), c.data_ptr(), lse.data_ptr(), row_weight.data_ptr(), rows, prototypes, dim, dim, dim,
                KERNEL_DTYPES[z.dtype], inv_tau, grad.data_ptr(), splits, scratch.data_ptr(), scratch.numel(),
                self._stream(z.device),
            )
        return grad

    # ---- family 3: multi-crop cross-entropy on given scores -------------------------------

    def _check_scores_and_codes(self, s, codes, crops_for_assign) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        s = self._input("s", s, 2)
        codes = self._input("codes", codes, 3, torch.float32, like=s)
        _nonempty("s", s)
        _nonempty("codes", codes)
        n_assign, batch, prototypes = codes.shape
        if s.shape[1] != prototypes or s.shape[0] % batch:
            raise ValueError(
                f"s must have shape (V·B, K) with B={batch} and K={prototypes} from codes, got {tuple(s.shape)}"
            )
        crops = [check_int("crops_for_assign entry", a) for a in crops_for_assign]
        n_crops = s.shape[0] // batch
        if len(crops) != n_assign or any(not 0 <= a < n_crops for a in crops):
            raise ValueError(
                f"crops_for_assign must list {n_assign} crops (codes.shape[0]) in [0, {n_crops}), got {crops}"
            )
        return s, codes, crops

    def scores_cross_entropy_forward(self, s: torch.Tensor, codes: torch.Tensor, crops_for_assign: Sequence[int],
                                     inv_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """s (V·B, K), codes (|A|, B, K) float32 → (lse, cross), both (V·B,) float32; see the contract."""
        s, codes, crops = self._check_scores_and_codes(s, codes, crops_for_assign)
        inv_tau = check_finite_float("inv_tau", inv_tau, positive=True)
        rows, cols = s.shape
        lse = torch.empty(rows, device=s.device, **_F32)
        cross = torch.empty(rows, device=s.device, **_F32)
        with self._launch_guard(s.device):
            self._extension().scores_cross_entropy_forward(
                s.data_ptr(), codes.data_ptr(), rows, cols, cols, codes.shape[1], crops, KERNEL_DTYPES[s.dtype],
                inv_tau, lse.data_ptr(), cross.data_ptr(), self._stream(s.device),
            )
        return lse, cross

    def scores_cross_entropy_backward(self, s: torch.Tensor, codes: torch.Tensor, lse: torch.Tensor,
                                      row_weight: torch.Tensor, crops_for_assign: Sequence[int], inv_tau: float,
                                      scale: torch.Tensor) -> torch.Tensor:
        """∂s (V·B, K) in the dtype of s; ``lse`` and ``row_weight`` (V·B,) float32, ``scale`` a
        one-element float32 CUDA tensor; see the contract."""
        s, codes, crops = self._check_scores_and_codes(s, codes, crops_for_assign)
        rows, cols = s.shape
        lse = self._input("lse", lse, 1, torch.float32, like=s)
        check_shape("lse", lse, (rows,))
        row_weight = self._input("row_weight", row_weight, 1, torch.float32, like=s)
        check_shape("row_weight", row_weight, (rows,))
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
            raise TypeError(f"scale must be a one-element torch.Tensor, got {scale!r}")
        scale = self._input("scale", scale.reshape(()), 0, torch.float32, like=s)
        inv_tau = check_finite_float("inv_tau", inv_tau, positive=True)
        grad = torch.empty_like(s)
        with self._launch_guard(s.device):
            self._extension().scores_cross_entropy_backward(
                s.data_ptr(), codes.data_ptr(), lse.data_ptr(), row_weight.data_ptr(), scale.data_ptr(), rows,
                cols, cols, codes.shape[1],
                crops, KERNEL_DTYPES[s.dtype], inv_tau, grad.data_ptr(), self._stream(s.device),
            )
        return grad
