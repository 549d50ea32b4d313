"""Pure-PyTorch reference of the SwAV loss: a plain transcription of DESIGN §1.

This module is the oracle every kernel is tested against and the baseline of every
benchmark. It never imports a kernel and does no fusion. The only departure from the
textbook code is that the Sinkhorn runs in the log domain, which is the same function
but cannot overflow: ``exp(X/ε)`` in fp32 overflows once a score exceeds ~4.4 at ε=0.05.

Inputs are assumed valid (``swav_kernels.swav_loss`` validates them). Half-precision
inputs are evaluated in float32, float64 inputs in float64.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .distributed import all_reduce_max_, all_reduce_sum_, global_row_count, is_distributed


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _logsumexp_over_ranks(x: torch.Tensor, dim, process_group) -> torch.Tensor:
    """``log Σ exp(x)`` along ``dim`` (keepdim), where the sum also runs over all ranks."""
    if not is_distributed(process_group):
        return torch.logsumexp(x, dim=dim, keepdim=True)
    shift = all_reduce_max_(x.amax(dim=dim, keepdim=True), process_group)
    total = all_reduce_sum_(torch.exp(x - shift).sum(dim=dim, keepdim=True), process_group)
    return shift + torch.log(total)


@torch.no_grad()
def sinkhorn_reference(
    scores: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
    process_group=None,
) -> torch.Tensor:
    """Sinkhorn-Knopp codes of DESIGN §1, in the log domain.

    Args:
        scores: ``(N, K)`` or ``(G, N, K)`` scores of N samples (queue rows and batch rows
            of this rank) against K prototypes; G independent problems are solved at once.
        epsilon: entropic regularisation ε (> 0).
        iterations: number T of (per-prototype, per-sample) normalisation rounds, ≥ 0.
        process_group: ranks whose rows join this problem (None: this rank only).

    Returns:
        Codes with the shape of ``scores`` in float32 (float64 for float64 input). For
        ``iterations >= 1`` every row sums to 1; for 0 they are the normalised ``exp(X/ε)``
        scaled by the global row count.
    """
    x = scores.detach().to(accumulation_dtype(scores.dtype))
    rows, prototypes = x.shape[-2], x.shape[-1]
    log_rows_total = torch.log(global_row_count(rows, process_group, x.device, x.dtype))
    log_prototypes = math.log(prototypes)

    # P = exp(X/ε)ᵀ;  P /= sum(P)   (the total runs over every rank)
    log_p = x / epsilon
    log_p = log_p - _logsumexp_over_ranks(log_p, (-2, -1), process_group)
    for _ in range(iterations):
        # P /= P.sum(dim=1): per prototype, over the samples of every rank;  P /= K
        log_p = log_p - _logsumexp_over_ranks(log_p, -2, process_group) - log_prototypes
        # P /= P.sum(dim=0): per sample, local;  P /= (L+B)·W
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True) - log_rows_total
    # P *= (L+B)·W
    return torch.exp(log_p + log_rows_total)


def swapped_prediction_reference(
    scores: torch.Tensor,
    codes: torch.Tensor,
    n_crops: int,
    crops_for_assign: Sequence[int],
    temperature: float,
) -> torch.Tensor:
    """Swapped-prediction cross-entropy of DESIGN §1 given fixed codes.

    Args:
        scores: ``(V·B, K)`` crop-major scores (rows ``v·B … v·B+B-1`` are crop v).
        codes: ``(|A|, B, K)`` codes ``q_i`` of the assign crops, treated as constants.
        n_crops: V.
        crops_for_assign: the assign crops A, indices into the V crops.
        temperature: τ.

    Returns:
        0-d loss ``1/|A| Σ_i 1/(V−1) Σ_{v≠i} mean_b[−Σ_k q_i log_softmax(S_v/τ)]`` in the
        accumulation dtype of ``scores``.
    """
    batch = scores.shape[0] // n_crops
    scores = scores.to(accumulation_dtype(scores.dtype))
    codes = codes.detach().to(scores.dtype)
    loss = scores.new_zeros(())
    for a, i in enumerate(crops_for_assign):
        q = codes[a]
        subloss = scores.new_zeros(())
        for v in range(n_crops):
            if v == i:
                continue
            x = scores[v * batch:(v + 1) * batch] / temperature
            subloss = subloss - torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss = loss + subloss / (n_crops - 1)
    return loss / len(crops_for_assign)


def assignment_codes_reference(
    assign_scores: torch.Tensor,
    queue_scores: torch.Tensor | None,
    epsilon: float,
    iterations: int,
    process_group=None,
) -> torch.Tensor:
    """Codes of the current batch for every assign crop.

    Args:
        assign_scores: ``(|A|, B, K)`` scores of the assign crops.
        queue_scores: ``(|A|, L, K)`` scores of the queued rows (prepended), or None.

    Returns:
        ``(|A|, B, K)`` codes of the batch rows.
    """
    batch = assign_scores.shape[1]
    x = assign_scores.detach()
    if queue_scores is not None:
        x = torch.cat((queue_scores.detach().to(x.dtype), x), dim=1)
    return sinkhorn_reference(x, epsilon, iterations, process_group)[:, -batch:]


def swav_loss_reference(
    scores: torch.Tensor,
    n_crops: int,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue_scores: torch.Tensor | None = None,
    process_group=None,
) -> torch.Tensor:
    """The whole SwAV loss from crop-major scores ``(V·B, K)``; see DESIGN §1.

    ``queue_scores``: ``(|A|, L, K)`` scores of queued rows per assign crop, or None.
    Returns a 0-d tensor in float32 (float64 for float64 scores).
    """
    batch = scores.shape[0] // n_crops
    assign = scores.detach().view(n_crops, batch, -1)[list(crops_for_assign)]
    codes = assignment_codes_reference(assign, queue_scores, epsilon, sinkhorn_iterations, process_group)
    return swapped_prediction_reference(scores, codes, n_crops, crops_for_assign, temperature)


def swav_loss_from_embeddings_reference(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    n_crops: int,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue: torch.Tensor | None = None,
    process_group=None,
) -> torch.Tensor:
    """The SwAV loss from embeddings ``Z (V·B, D)`` and prototypes ``C (K, D)``.

    Scores ``S = Z Cᵀ`` are materialised (this is the reference); ``queue`` holds
    ``(|A|, L, D)`` queued embeddings, scored with the current prototypes.
    """
    dtype = accumulation_dtype(embeddings.dtype)
    weight = prototypes.to(dtype)
    scores = embeddings.to(dtype) @ weight.t()
    queue_scores = None
    if queue is not None:
        with torch.no_grad():
            queue_scores = queue.to(dtype) @ weight.detach().t()
    return swav_loss_reference(
        scores, n_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations,
        queue_scores, process_group,
    )
