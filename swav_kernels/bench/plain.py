"""The "plain" peer: the SwAV loss as trainers write it (facebookresearch/swav ``main_swav.py``).

Exponential-domain Sinkhorn (``torch.exp(out / ε)``, which overflows float32 once a score
exceeds ~4.4 at ε = 0.05 and then yields NaN codes) and a ``log_softmax`` cross-entropy per
(assign crop, other crop) pair, single process. The prototype scores come from a matmul in
the input dtype (an ``nn.Linear`` under autocast); ``exp`` and ``log_softmax`` run in float32,
as autocast runs them. Written here for the benchmark; it is not part of the package's API.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def plain_sinkhorn(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Codes ``(N, K)`` float32 of scores ``out (N, K)`` (``distributed_sinkhorn``, one rank)."""
    q = torch.exp(out.float() / epsilon).t()  # K × N
    n_samples, n_prototypes = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= n_prototypes
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= n_samples
    q *= n_samples
    return q.t()


def plain_swav_loss(embeddings: torch.Tensor, prototypes: torch.Tensor, n_crops: int,
                    crops_for_assign=(0, 1), temperature: float = 0.1, epsilon: float = 0.05,
                    sinkhorn_iterations: int = 3, queue: torch.Tensor | None = None) -> torch.Tensor:
    """The SwAV loss of ``embeddings (V·B, D)`` and ``prototypes (K, D)``, 0-d float32;
    ``queue (|A|, L, D)`` embeddings are scored with the current prototypes and prepended."""
    output = embeddings @ prototypes.t()
    bs = output.shape[0] // n_crops
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = output[bs * crop_id: bs * (crop_id + 1)].detach()
            if queue is not None:
                out = torch.cat((queue[i] @ prototypes.t(), out))
            q = plain_sinkhorn(out, epsilon, sinkhorn_iterations)[-bs:]
        subloss = 0
        for v in range(n_crops):
            if v == crop_id:
                continue
            x = output[bs * v: bs * (v + 1)].float() / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (n_crops - 1)
    return loss / len(crops_for_assign)


def plain_scores_logsumexp(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(Z Cᵀ / τ)`` per row, (V·B,) float32, matmul in the input dtype."""
    return torch.logsumexp((embeddings @ prototypes.t()).float() / temperature, dim=1)
