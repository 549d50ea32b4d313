"""The kernel contract: six primitives that a kernel backend (Triton, CUDA) implements.

Everything else (distributed sums, autograd, custom-op registration, the cheap O(B·K·D)
cross terms) is shared in ``swav_kernels.kernel_backend``, so the Triton and CUDA
backends differ only in these functions. Each docstring is the exact formula the
kernel must compute; ``tests/kernel_oracle.py`` transcribes them in plain PyTorch.

Notation: ``x (G, N, K)`` Sinkhorn scores (G problems), ``z (M, D)`` embeddings with
M = V·B crop-major rows, ``c (K, D)`` prototypes, ``codes (|A|, B, K)`` float32,
``s (V·B, K)`` scores. All reductions accumulate in float32; outputs are float32 unless
stated. Inputs are contiguous (row-major) and share a device and dtype (fp32/fp16/bf16).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch


class Kernels(Protocol):
    name: str

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when these kernels run ``dtype`` tensors on ``device``; else why not."""

    # ---- family 2: Sinkhorn, log domain with dual potentials ---------------------------
    # Codes are q[n, k] = exp(x[n, k]·inv_eps + a[k] + b[n] + log_rows_total) with column
    # potentials a (G, K) and row potentials b (G, N); see kernel_backend.kernel_sinkhorn.

    def sinkhorn_column_init(self, x: torch.Tensor, inv_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prototype, over this rank's rows:
        ``col_max[g, k] = max_n x[g, n, k]·inv_eps`` and
        ``col_sum[g, k] = Σ_n exp(x[g, n, k]·inv_eps − col_max[g, k])``; both (G, K) float32."""

    def sinkhorn_row_step(
        self,
        x: torch.Tensor,
        inv_eps: float,
        col_potential: torch.Tensor,
        log_rows_total: float,
        normalize_rows: bool,
        want_column_sums: bool,
        codes_from_row: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One per-sample normalisation, fused with what the next step needs.

        Row potential ``b[g, n] = −lse_k(x[g, n, k]·inv_eps + a[g, k]) − log_rows_total`` if
        ``normalize_rows`` else ``0`` (lse exact, max-shifted), with
        ``a = col_potential (G, K)`` float32. Returns ``(column_sums, codes)``:
        ``column_sums[g, k] = Σ_n exp(x[g, n, k]·inv_eps + a[g, k] + b[g, n])`` (G, K) if
        ``want_column_sums`` else an empty (G, 0) tensor; and, for ``codes_from_row >= 0``,
        ``codes[g, n − codes_from_row, k] = exp(x·inv_eps + a + b + log_rows_total)`` for rows
        ``n >= codes_from_row`` (G, N − codes_from_row, K), else an empty (G, 0, K) tensor.
        With the potentials the orchestration passes, every exp argument is ≤ log_rows_total,
        so no overflow is possible. Precision: form ``t = x·inv_eps + a[k]`` once and take
        ``exp((t − lse_k(t)) − log_rows_total)``, never ``t + b`` with a large ``b``, so each
        row sums to 1 within float32 rounding even when |x|/ε is in the thousands.
        """

    # ---- family 1: prototype scoring + temperature softmax -----------------------------

    def scores_logsumexp(
        self, z: torch.Tensor, c: torch.Tensor, inv_tau: float, with_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``lse[m] = log Σ_k exp(inv_tau · z[m]·c[k])`` (M,), and if ``with_output`` the
        attention output ``out[m] = Σ_k softmax_k(inv_tau · z[m]·Cᵀ) · c[k]`` (M, D), else an
        empty (0, D) tensor; both float32. The (M, K) scores are never stored."""

    def softmax_prototype_grad(
        self, z: torch.Tensor, c: torch.Tensor, lse: torch.Tensor, row_weight: torch.Tensor, inv_tau: float
    ) -> torch.Tensor:
        """``g[k] = Σ_m row_weight[m] · exp(inv_tau · z[m]·c[k] − lse[m]) · z[m]`` (K, D) float32,
        computed per block of prototypes (no atomics: deterministic)."""

    # ---- family 3: multi-crop cross-entropy on given scores ----------------------------

    def scores_cross_entropy_forward(
        self, s: torch.Tensor, codes: torch.Tensor, crops_for_assign: Sequence[int], inv_tau: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``lse[r] = log Σ_k exp(inv_tau · s[r, k])`` and
        ``cross[v·B + b] = Σ_{a: A[a] ≠ v} Σ_k codes[a, b, k] · s[v·B + b, k]``; both (V·B,) float32."""

    def scores_cross_entropy_backward(
        self,
        s: torch.Tensor,
        codes: torch.Tensor,
        lse: torch.Tensor,
        row_weight: torch.Tensor,
        crops_for_assign: Sequence[int],
        inv_tau: float,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """``∂s[v·B + b, k] = scale · (row_weight[v·B + b] · exp(inv_tau · s[v·B + b, k] − lse[v·B + b])
        − Σ_{a: A[a] ≠ v} codes[a, b, k])``, where ``row_weight (V·B,)`` float32 is the mass of the
        codes row (v, b) predicts (n_v when code rows sum to 1) and ``scale`` a 0-d float32
        tensor; returned in the dtype of ``s``."""
