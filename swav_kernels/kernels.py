"""The kernel contract: the primitives a kernel backend (Triton, CUDA) implements.

Every docstring below is the exact formula the kernels compute; ``tests/kernel_oracle.py``
transcribes them in plain PyTorch and every kernel is tested against it. The orchestration
that strings the primitives together (distributed sums, custom ops, autograd) is shared, in
``swav_kernels.kernel_backend``. DESIGN.md §1 gives the loss these primitives compute, §4 the
numerics every result must meet, §5a the launch budget below.

Notation: ``z (M, D)`` embeddings with M = V·B crop-major rows (rows v·B … v·B+B−1 are crop
v), ``c (K, D)`` prototypes, ``s (M, K)`` scores, A = ``crops`` the assign crops. A Sinkhorn
problem has G = |A| groups of N = L + B rows over K prototypes: group g's rows are its L
queued rows followed by the B batch rows of crop A[g] (``SinkhornRows``). All sums accumulate
in float32; inputs are fp32, fp16 or bf16, contiguous, on one device; outputs are float32
unless stated.

Design decisions (DESIGN.md §5a):

* **Scores are recomputed, not stored.** On the fused path (``SinkhornRows.prototypes`` given)
  every Sinkhorn pass recomputes ``x = row · c_k`` on tensor cores from the embeddings it reads:
  at D = 128 that is 256 FLOP per score against 4 bytes of a stored fp32 score, about 3×
  cheaper on an H200 (≈ 790 TFLOP/s against ≈ 4.3 TB/s), the G×N×K buffer disappears (512 MiB
  at the large-k shape) and the queue is scored inside the passes (no ``cat``, no separate
  matmul). The scores path reads the scores it is given, in their dtype, and never copies them.
* **Alternating single-pass Sinkhorn over dual potentials.** Codes are
  ``q[n, k] = exp(x[n, k]/ε + a[k] + b[n])``: a column step computes the column potential a
  from the row potential b, a row step b from a; each is one launch that reads every score
  once. Where rows (or prototypes) are too few to fill the device, a step splits the other
  dimension into ranges and writes one partial log-sum-exp per range; the launch that reads
  them merges them while it loads the potential, so a split adds no launch. T iterations take
  2·T launches, plus one row step on the fused path, whose codes are split over prototype
  ranges and take the row's log-sum-exp from it (the scores path's codes sweep each row
  twice instead). The row count N and the total of ``P /= sum(P)`` cancel in the codes for
  T ≥ 1, so no host value and no collective beyond the per-prototype sums is needed.
* **Launch budget** (one fwd+bwd, T = 3, queue on, 2 assign crops, every launch counted):
  fused path ≤ 12 = Sinkhorn 7 + loss forward 1 (its prototype split, where rows are few, merged
  by the loss sum and the backward) + loss sum 1 + autograd's seed 1 + backward 1–2 (∂C's row
  split merged by one more launch); scores path ≤ 10 = 6 + 1 + 1 + 1 + 1.
* **Determinism.** No atomics: every reduction split across programs writes partials that
  are added in a fixed order; tile sizes and split counts come from fixed rules keyed on
  (rows, K, D, dtype, device), never from a timing race.
* **Non-finite inputs propagate.** Each primitive folds ``Σ 0·x`` of what it reads into its
  sums, so NaN or ±inf anywhere in the inputs yields NaN (codes, loss), never a finite number
  and never a host synchronisation.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch


class SinkhornRows(NamedTuple):
    """The N = L + B rows of each of the G Sinkhorn problems, without copying them.

    Row n of group g is ``queue[g, n]`` for n < L, else ``main[crops[g]·B + n − L]``. With
    ``prototypes (K, D)`` the rows are embeddings and ``x[g, n, k] = row · prototypes[k]``;
    without, they are scores and ``x[g, n, k] = row[k]``.
    """

    main: torch.Tensor  # (R, X): crop-major rows, X = K (scores) or D (embeddings)
    queue: torch.Tensor | None  # (G, L, X) or None (L = 0)
    crops: tuple[int, ...]  # G entries, each a block of B rows of main
    batch: int  # B
    prototypes: torch.Tensor | None  # (K, D) or None

    @property
    def groups(self) -> int:
        return len(self.crops)

    @property
    def queue_rows(self) -> int:
        return 0 if self.queue is None else self.queue.shape[1]

    @property
    def rows(self) -> int:
        """N = L + B."""
        return self.queue_rows + self.batch

    @property
    def prototype_count(self) -> int:
        return self.main.shape[1] if self.prototypes is None else self.prototypes.shape[0]


class ColumnStats(NamedTuple):
    """Per-prototype log-sum-exp over disjoint row ranges s = 0 … S−1, natural log:
    ``LSE_n t[g, n, k] = log Σ_s sumexp[s, g, k] · exp(max[s, g, k])``."""

    max: torch.Tensor  # (S, G, K) float32
    sumexp: torch.Tensor  # (S, G, K) float32


class RowStats(NamedTuple):
    """Per-row log-sum-exp over disjoint prototype ranges r = 0 … R−1, in base 2:
    ``LSE_k t[g, n, k]·log2(e) = log2 Σ_r sumexp[r, g, n] · 2^(max[r, g, n])``, where ``max`` is the
    largest ``t·log2(e)`` of the range (exactly, as the kernel rounded it) and ``sumexp`` the sum of
    ``2^(t·log2(e) − max)`` over it."""

    max: torch.Tensor  # (R, G, N) float32
    sumexp: torch.Tensor  # (R, G, N) float32


class Codes(NamedTuple):
    """The codes of the batch rows and what the loss needs from them. Mass and projection come as S ≥ 1
    partials over disjoint prototype ranges, to be added (``mass = Σ_s mass[s]``)."""

    codes: torch.Tensor  # (G, B, K) float32
    mass: torch.Tensor | None  # (S, G, B) float32: Σ_k codes over range s (Σ_s: 1 when T ≥ 1)
    projected: torch.Tensor | None  # (S, G, B, D) float32: codes · C over range s (fused path), else None


class Kernels(Protocol):
    name: str

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when these kernels run ``dtype`` tensors on ``device``; else why not."""

    # ---- family 2: Sinkhorn, log domain with dual potentials -----------------------------

    def sinkhorn_column_step(self, rows: SinkhornRows, inv_eps: float,
                             row_stats: RowStats | None) -> ColumnStats:
        """With ``t[g, n, k] = inv_eps · x[g, n, k] + b[g, n]`` (b = ``−LSE`` of the row step's
        ``row_stats``, or 0 when None): partial column statistics over S ≥ 1 disjoint row ranges,
        ``max[s, g, k] = max_{n ∈ s} t`` and ``sumexp[s, g, k] = Σ_{n ∈ s} exp(t − max) + Σ_{n ∈ s} 0·x``,
        so that ``LSE_n t = log Σ_s sumexp·exp(max)``. S is the backend's choice."""

    def sinkhorn_row_step(self, rows: SinkhornRows, inv_eps: float, columns: ColumnStats) -> RowStats:
        """The row statistics of ``u[g, n, k] = inv_eps · x[g, n, k] + a[g, k]`` over R ≥ 1 prototype
        ranges (``RowStats``: the row potential is ``b = −LSE_k u``), where
        ``a[g, k] = −log K − LSE_s(max[s, g, k] + log sumexp[s, g, k])`` is the column potential of
        ``columns`` (exact, max-shifted). R is the backend's choice."""

    def sinkhorn_codes(self, rows: SinkhornRows, inv_eps: float, columns: ColumnStats,
                       row_stats: RowStats | None, normalize_rows: bool) -> Codes:
        """Codes of the batch rows n = L + j, j < B, with a from ``columns`` as in the row step
        and ``u[g, j, k] = inv_eps · x[g, L + j, k] + a[g, k]`` (formed in float32 exactly as the row
        step forms it): ``codes = exp(u − LSE_k u)`` if ``normalize_rows`` (each row sums to 1 within
        float32 rounding even when |x|/ε is in the thousands), the row's LSE taken from
        ``row_stats`` (the row step run with the same ``columns``) when given, else ``exp(u)``;
        ``mass[s] = Σ_{k ∈ s} codes`` (S, G, B); ``projected[s] = codes[:, :, s] · C[s]`` (S, G, B, D)
        on the fused path, else None. S is the backend's choice."""

    # ---- families 1 and 3: the swapped-prediction loss ------------------------------------
    # For row m = v·B + b: its weight w[m] = Σ_{a: A[a] ≠ v} mass[a, b] (the code mass it must
    # predict: n_v = |{a : A[a] ≠ v}| when code rows sum to 1) and denom = |A|·(V − 1)·B.
    # loss = (Σ_m w[m]·lse[m] − inv_tau · Σ_m Σ_{a: A[a] ≠ v} codes[a, b] · s[m]) / denom, which is
    # DESIGN.md §1's loss, since −Σ_k q log softmax(s/τ) = (Σ_k q)·lse(s/τ) − q·s/τ.

    def embeddings_loss(self, z: torch.Tensor, c: torch.Tensor, codes: Codes, crops: tuple[int, ...],
                        inv_tau: float, with_output: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss from ``z`` and ``c`` without storing the (M, K) scores: returns ``(loss`` 0-d,
        ``lse (M,)`` with ``lse[m] = LSE_k(inv_tau · z[m]·c[k])``, ``out)`` with
        ``out[m] = Σ_k softmax_k(inv_tau · z[m]·Cᵀ) · c[k]`` (M, D) if ``with_output`` else (0, D)).
        The cross term ``codes[a, b] · s[m]`` is ``projected[a, b] · z[m]``; mass and projected
        must be given. ``loss`` also carries ``Σ 0·z``."""

    def embeddings_loss_backward(self, grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: Codes,
                                 crops: tuple[int, ...], inv_tau: float, lse: torch.Tensor,
                                 out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``coef = grad · inv_tau / denom`` (``grad`` a 0-d float32 tensor, read on the device)
        and ``p[m, k] = exp(inv_tau · z[m]·c[k] − lse[m])``:
        ``∂z[m] = coef · (w[m]·out[m] − Σ_{a: A[a] ≠ v} projected[a, b])`` in z's dtype and
        ``∂c[k] = coef · Σ_m (w[m]·p[m, k] − Σ_{a: A[a] ≠ v} codes[a, b, k]) · z[m]`` in c's dtype."""

    def scores_loss(self, s: torch.Tensor, codes: torch.Tensor, crops: tuple[int, ...],
                    inv_tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss from scores ``s (M, K)`` and ``codes (|A|, B, K)`` float32 (any codes: rows need
        not sum to 1): returns ``(loss`` 0-d, ``lse (M,)`` = LSE_k(inv_tau · s[m]), ``weight (M,)``
        = w with the masses summed from ``codes)``. ``loss`` also carries ``Σ 0·s`` and ``Σ 0·codes``."""

    def scores_loss_backward(self, grad: torch.Tensor, s: torch.Tensor, codes: torch.Tensor,
                             crops: tuple[int, ...], inv_tau: float, lse: torch.Tensor,
                             weight: torch.Tensor) -> torch.Tensor:
        """``∂s[m, k] = coef · (weight[m]·exp(inv_tau·s[m, k] − lse[m]) − Σ_{a: A[a] ≠ v} codes[a, b, k])``
        in the dtype of ``s``, with ``coef = grad · inv_tau / denom`` read on the device."""
