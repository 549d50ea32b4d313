"""The tensors of one benchmark problem, built the same way for every peer and device."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .shapes import Shape


@dataclass
class Problem:
    """Inputs of one case on its device, in its dtype.

    ``embeddings`` Z (V·B, D) unit rows and ``prototypes`` C (K, D) rows of norm
    ``score_scale`` (so scores lie in [−score_scale, score_scale]), both requiring grad;
    ``queue`` (|A|, L, D) unit rows or None; ``sinkhorn_scores`` (|A|, L+B, K): the scores of
    the queue rows followed by the assign crops' rows, the input of the Sinkhorn alone
    (None unless asked for).
    """

    shape: Shape
    embeddings: torch.Tensor
    prototypes: torch.Tensor
    queue: torch.Tensor | None
    sinkhorn_scores: torch.Tensor | None
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3

    def input_bytes(self, op: str) -> int:
        """Bytes of the tensors ``op`` reads (what a peak-memory figure is measured above)."""
        if op == "sinkhorn":
            return self.sinkhorn_scores.nbytes
        total = self.embeddings.nbytes + self.prototypes.nbytes
        if op == "loss" and self.queue is not None:
            total += self.queue.nbytes
        return total


def make_problem(shape: Shape, device: torch.device | str, dtype: torch.dtype, seed: int = 0,
                 score_scale: float = 1.0, sinkhorn_scores: bool = True) -> Problem:
    """Random unit embeddings, prototypes and queue for ``shape`` (drawn on the CPU in float32
    from ``seed``, so every device and dtype sees the same values up to rounding); the
    Sinkhorn scores are computed on ``device`` in float32, then cast, if ``sinkhorn_scores``."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(shape.rows, shape.dim, generator=g), dim=1)
    c = F.normalize(torch.randn(shape.prototypes, shape.dim, generator=g), dim=1) * score_scale
    n_assign = len(shape.crops_for_assign)
    queue = None
    if shape.queue:
        queue = F.normalize(torch.randn(n_assign, shape.queue, shape.dim, generator=g), dim=-1)
    scores = None
    if sinkhorn_scores:
        assign = z.view(shape.n_crops, shape.batch, shape.dim)[list(shape.crops_for_assign)]
        rows = assign if queue is None else torch.cat((queue, assign), dim=1)
        scores = rows.to(device) @ c.to(device).t()

    def place(t, grad=False):
        return None if t is None else t.to(device=device, dtype=dtype).requires_grad_(grad)

    return Problem(shape, place(z, True), place(c, True), place(queue), place(scores))
