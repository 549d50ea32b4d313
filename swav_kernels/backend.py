"""The interface every backend implements, with the pure-PyTorch reference as its default body.

A backend supplies the computation of DESIGN.md §1 as three operations: the codes of the assign
crops (family 2, Sinkhorn), and the swapped-prediction loss from embeddings + prototypes
(families 1 and 3 fused) or from scores (family 3). The orchestration (validation, which rows
feed the Sinkhorn) lives in ``swav_kernels.loss`` and is shared by all backends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import reference
from .kernels import Codes, SinkhornRows


@dataclass(frozen=True)
class LossSpec:
    """Validated hyper-parameters of one loss evaluation."""

    n_crops: int
    crops_for_assign: tuple[int, ...]
    temperature: float
    epsilon: float
    sinkhorn_iterations: int
    process_group: Any = None


def materialized_scores(rows: SinkhornRows) -> torch.Tensor:
    """The (G, N, K) Sinkhorn scores of ``rows`` as the reference computes them: queued rows, then
    the batch rows of each assign crop, scored in the accumulation dtype when embeddings."""
    dtype = reference.accumulation_dtype(rows.main.dtype)
    main = rows.main.detach().to(dtype)
    batch = main.view(-1, rows.batch, main.shape[1])[list(rows.crops)]
    x = batch if rows.queue is None else torch.cat((rows.queue.detach().to(dtype), batch), dim=1)
    if rows.prototypes is not None:
        x = x @ rows.prototypes.detach().to(dtype).t()
    return x


def _poison(x: torch.Tensor, dims=None) -> torch.Tensor:
    """``Σ 0·x``: 0, or NaN when x holds NaN or ±inf. Added to a result, it makes every non-finite
    input give NaN (the log-domain formulas can turn −inf into an exact 0 or into +inf)."""
    zero = (x * 0).sum(dim=dims, keepdim=dims is not None)
    return zero.to(reference.accumulation_dtype(x.dtype))


class Backend:
    """Reference implementation of the backend operations (pure PyTorch, any device)."""

    name = "reference"

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when this backend runs tensors of ``dtype`` on ``device``; else why not."""
        return None

    def prepare_embeddings_loss(self, embeddings: torch.Tensor, prototypes: torch.Tensor,
                                queue: torch.Tensor | None, spec: LossSpec, with_grad: bool):
        """A callable ``(embeddings, prototypes, queue, queue_scores) -> loss`` (``queue_scores`` None, and
        ``queue`` to be ignored when it was None or empty here) that computes this loss for these
        arguments and for every later call with the same signature (shapes, strides, dtypes, device,
        16-byte alignment, ``spec``, ``with_grad``), every check already passed; None when the backend
        has none for them, and the generic path (``assignment_codes`` + ``loss_from_embeddings``) runs."""
        return None

    def prepare_scores_loss(self, scores: torch.Tensor, queue_scores: torch.Tensor | None, spec: LossSpec,
                            with_grad: bool):
        """As ``prepare_embeddings_loss`` for the scores path: ``(scores, None, None, queue_scores) -> loss``
        (``queue_scores`` ignored when it was None or empty here), or None."""
        return None

    def assignment_codes(self, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> Codes:
        """Sinkhorn codes ``(G, B, K)`` of the batch rows of ``rows`` (every row takes part), float32
        or float64; kernel backends also return the codes' mass and, on the fused path, codes · C."""
        scores = materialized_scores(rows)
        codes = reference.sinkhorn_reference(scores, epsilon, iterations, process_group)
        return Codes(codes[:, rows.queue_rows:] + _poison(scores, dims=(1, 2)), None, None)

    def loss_from_scores(self, scores: torch.Tensor, codes: Codes, spec: LossSpec) -> torch.Tensor:
        """Swapped-prediction loss of ``(V·B, K)`` scores against the ``(|A|, B, K)`` codes."""
        loss = reference.swapped_prediction_reference(
            scores, codes.codes, spec.n_crops, spec.crops_for_assign, spec.temperature
        )
        return loss + _poison(scores.detach()) + _poison(codes.codes)

    @torch.no_grad()
    def shift_queue(self, queue: torch.Tensor, embeddings: torch.Tensor, crops: tuple[int, ...], batch: int) -> None:
        """In place, facebookresearch/swav's queue update: ``queue (G, L, D)`` moves down by B rows
        and the B batch rows of crop ``crops[g]`` of ``embeddings (V·B, D)`` enter queue g at the
        front (newest first). Two device ops here; kernel backends may do it in one."""
        length = queue.shape[1]
        grid = embeddings.detach().reshape(-1, batch, embeddings.shape[1])
        crops = list(crops)
        new = grid[crops[0]:crops[0] + len(crops)] if crops == list(range(crops[0], crops[0] + len(crops))) \
            else grid[crops]
        keep = max(length - batch, 0)
        if keep:
            queue.copy_(torch.cat((new.to(queue.dtype), queue[:, :keep]), dim=1))
        else:
            queue.copy_(new[:, :length])

    def loss_from_embeddings(
        self, embeddings: torch.Tensor, prototypes: torch.Tensor, codes: Codes, spec: LossSpec
    ) -> torch.Tensor:
        """Swapped-prediction loss of ``Z (V·B, D)`` and ``C (K, D)``; gradients reach both."""
        dtype = reference.accumulation_dtype(embeddings.dtype)
        scores = embeddings.to(dtype) @ prototypes.to(dtype).t()
        return self.loss_from_scores(scores, codes, spec)
