"""The interface every backend implements, with the reference as its default body.

A backend supplies the three kernel families of DESIGN §2 as four operations. The
orchestration (which rows feed the Sinkhorn, queue handling, validation) lives in
``swav_kernels.loss`` and is shared by all backends, so a kernel backend overrides only
the operations it accelerates and inherits the reference for the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import reference


@dataclass(frozen=True)
class LossSpec:
    """Validated hyper-parameters of one loss evaluation."""

    n_crops: int
    crops_for_assign: tuple[int, ...]
    temperature: float
    epsilon: float
    sinkhorn_iterations: int
    process_group: Any = None


class Backend:
    """Reference implementation of the backend operations (pure PyTorch, any device)."""

    name = "reference"

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when this backend runs tensors of ``dtype`` on ``device``; else why not."""
        return None

    def sinkhorn(
        self, scores: torch.Tensor, epsilon: float, iterations: int, process_group, codes_from_row: int = 0
    ) -> torch.Tensor:
        """Codes ``(G, N − codes_from_row, K)`` of the rows ``>= codes_from_row`` of ``(G, N, K)``
        scores (G independent problems; every row takes part), float32 or float64."""
        return reference.sinkhorn_reference(scores, epsilon, iterations, process_group)[:, codes_from_row:]

    def score(self, embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``embeddings (..., D) @ prototypesᵀ`` without gradient, in the accumulation dtype."""
        dtype = reference.accumulation_dtype(embeddings.dtype)
        with torch.no_grad():
            return embeddings.detach().to(dtype) @ prototypes.detach().to(dtype).t()

    def loss_from_scores(self, scores: torch.Tensor, codes: torch.Tensor, spec: LossSpec) -> torch.Tensor:
        """Swapped-prediction loss of ``(V·B, K)`` scores against ``(|A|, B, K)`` codes."""
        return reference.swapped_prediction_reference(
            scores, codes, spec.n_crops, spec.crops_for_assign, spec.temperature
        )

    def loss_from_embeddings(
        self, embeddings: torch.Tensor, prototypes: torch.Tensor, codes: torch.Tensor, spec: LossSpec
    ) -> torch.Tensor:
        """Swapped-prediction loss of ``Z (V·B, D)`` and ``C (K, D)``; gradients reach both."""
        dtype = reference.accumulation_dtype(embeddings.dtype)
        scores = embeddings.to(dtype) @ prototypes.to(dtype).t()
        return self.loss_from_scores(scores, codes, spec)
