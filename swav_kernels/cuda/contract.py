"""The kernel contract of the CUDA backend: what each kernel of csrc/ computes, exactly.

The CUDA backend (DESIGN.md §2) leaves every matmul to the library torch already uses (cuBLAS on a
GPU, ATen on a CPU) and launches its own kernels only for what no library does, each a pass over
stored scores at memory speed: the Sinkhorn's column and row steps and its codes, the swapped
cross-entropy of a chunk of score rows with its gradient, the backward's scaling, and the queue's
shift. ``KernelLaunchers`` (``launchers.py``) runs them; ``tests/cuda_kernel_oracle.py`` transcribes
every docstring below in plain PyTorch and the kernels are tested against it (on the CPU through
the emulation of tests/cuda_emulation, on a GPU as built).

Notation as in ``swav_kernels.kernels``: G = |A| Sinkhorn groups of N = L + B rows over K
prototypes, V crops of B images, τ the temperature. All sums accumulate in float32; inputs are
fp32, fp16 or bf16, outputs float32 unless stated. Every tensor below is a strided view whose last
dimension is contiguous; a kernel reads and writes only the elements its formula names.

Sinkhorn rows (``queue``, ``batch``, ``first_rows``, ``batch_rows``): row n of group g is
``queue[g, n]`` for n < L (``queue`` (G, L, K), or None for L = 0), else
``batch[first_rows[g] + n − L]`` (``batch`` (R, K), B = ``batch_rows`` rows per group). The batch
rows are the caller's crop-major scores (``first_rows[g] = A[g]·B``) or the (G·B, K) fp32 buffer the
backend scored the assign crops into (``first_rows[g] = g·B``). ``x[g, n, k]`` is that row's value.

Decisions (DESIGN.md §2, §5a):

* **Matmuls on the library, chunked over images.** Scores ``S = Z Cᵀ``, ``∂Z = ∂S C`` and
  ``∂C = Σ ∂Sᵀ Z`` are torch calls on chunks of whole images (every crop of each), so at most one
  chunk of (V·images, K) scores exists; ``swapped_loss`` turns a chunk's scores into the loss and
  ∂loss/∂S in one pass (the codes are constants, so the gradient is known in the forward). The
  backward only scales by the upstream gradient, read on the device.
* **One step, one launch, no partial sums.** A column step gives each block all rows of a strip
  of prototypes, a row step a warp per row: nothing is split across blocks, so there are no
  partials to merge, no atomics, and results are bitwise reproducible. T iterations take 2·T
  launches (T = 0: 2).
* **Precision rule** as in ``swav_kernels.kernels``: the codes of a row are
  ``exp((u − max) − log Σ)`` from the same rounded ``u = fma(x, inv_eps, a)`` that gave max and Σ.
* **Non-finite inputs propagate**: each kernel adds ``Σ 0·x`` of what it reads to what it writes.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch


class CudaKernelContract(Protocol):
    """One method per kernel of csrc/, tensors in place of the bindings' pointers."""

    def sinkhorn_columns(self, queue: torch.Tensor | None, batch: torch.Tensor | None, first_rows: Sequence[int],
                         batch_rows: int, inv_eps: float, row_potential: torch.Tensor | None,
                         column_max: torch.Tensor | None, column_sumexp: torch.Tensor | None, accumulate: bool,
                         column_potential: torch.Tensor | None, log_cols: float) -> None:
        """Column step over the call's rows n (its L queue rows, then its B batch rows; G = len(first_rows)).

        With ``t[g, n, k] = fma(x[g, n, k], inv_eps, b[g, n])``, ``b = row_potential[g, n]`` (G, ≥ N)
        float32, or 0 when None: the running pair ``m[g, k] = max_n t``, ``s[g, k] = Σ_n exp(t − m)``,
        merged with ``(column_max, column_sumexp)`` first when ``accumulate``
        (``m' = max(m, m0)``, ``s' = s·exp(m − m') + s0·exp(m0 − m')``), and ``z[g, k] = Σ_n 0·x``. Writes
        ``column_max = m``, ``column_sumexp = s + z`` (given together, or neither) and
        ``column_potential[g, k] = −log_cols − (m + log s) + z`` when given (G, K) float32.
        """

    def sinkhorn_rows(self, queue: torch.Tensor | None, batch: torch.Tensor | None, first_rows: Sequence[int],
                      batch_rows: int, inv_eps: float, column_potential: torch.Tensor,
                      row_potential: torch.Tensor) -> None:
        """Row step: ``row_potential[g, n] = −LSE_k fma(x[g, n, k], inv_eps, a[g, k]) + Σ_k 0·x`` for the
        call's rows n, with ``a = column_potential`` (G, K) float32; ``row_potential`` (G, ≥ N) float32."""

    def sinkhorn_codes(self, batch: torch.Tensor, first_rows: Sequence[int], batch_rows: int, inv_eps: float,
                       column_potential: torch.Tensor, normalize_rows: bool, codes: torch.Tensor) -> None:
        """Codes of the batch rows j < B: with ``u[g, j, k] = fma(x[g, L + j, k], inv_eps, a[g, k])``
        (formed once) and ``z[g, j] = Σ_k 0·x``, ``codes[g, j, k] = exp((u − max_k u) − log Σ_k exp(u −
        max_k u)) + z`` if ``normalize_rows`` (each row sums to 1 within float32 rounding even when |u| is
        in the thousands), else ``exp(u) + z``; ``codes`` (G, B, K) float32 contiguous, which may be
        ``batch`` itself (float32, ``first_rows[g] = g·B``): the codes then overwrite the scores."""

    def swapped_loss(self, scores: torch.Tensor, codes: torch.Tensor, crops: Sequence[int], first_image: int,
                     inv_tau: float, loss_scale: float, loss: torch.Tensor, grad: torch.Tensor | None) -> None:
        """The loss of a chunk of images ``b = first_image + i``, i < I, from ``scores (V, I, K)`` (row
        (v, i) is crop v of image b) and ``codes (|A|, B, K)`` float32. With
        ``Q[v, i, k] = Σ_{a: A[a] ≠ v} codes[a, b, k]`` (the codes row (v, b) predicts, added in order
        a = 0, 1, …), ``w[v, i] = Σ_k Q``, ``lse[v, i] = LSE_k(inv_tau·s)``:
        ``loss[b] = loss_scale · Σ_v (w·lse − inv_tau·Σ_k Q·s) + Σ 0·s + Σ 0·Q`` (``loss`` (B,) float32;
        the other images' entries are untouched), and unless ``grad`` is None,
        ``grad[v, i, k] = w·exp(inv_tau·s − lse) − Q`` in the dtype of ``grad (V, I, K)``, which may be
        ``scores`` itself. With ``loss_scale = 1 / (|A|·(V − 1)·B)`` the sum of ``loss`` is DESIGN.md §1's
        loss and ``grad · inv_tau · loss_scale`` its gradient with respect to the scores."""

    def scale_gradients(self, upstream: torch.Tensor, coef: float,
                        jobs: Sequence[tuple[torch.Tensor, torch.Tensor, int, int, int]]) -> None:
        """For each job ``(src, dst, crops, batch, chunk)`` (at most 2, one launch):
        ``dst[m] = upstream · coef · src[row(m)]`` in the dtype of ``dst`` (``src``, ``dst`` (crops·batch,
        C) contiguous; ``upstream`` a one-element float32 tensor read on the device), where with
        ``v = m // batch``, ``b = m % batch``, ``b0 = b − b % chunk`` and ``I = min(chunk, batch − b0)``:
        ``row(m) = crops·b0 + v·I + (b − b0)``, the order in which loss chunks of ``chunk`` images wrote
        their rows (the identity when ``chunk = batch``)."""

    def shift_queue(self, queue: torch.Tensor, embeddings: torch.Tensor, crops: Sequence[int], batch: int) -> None:
        """In place, facebookresearch/swav's queue update: ``queue (G, L, D)`` moves down by B rows
        (``queue[g, l] ← queue[g, l − B]`` for l ≥ B) and ``queue[g, j] = embeddings[crops[g]·B + j]``
        for j < min(B, L); ``embeddings (V·B, D)`` of the queue's dtype, both contiguous."""
