"""Random SwAV problems for tests, and the error measure the numerics contract uses."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Problem:
    embeddings: torch.Tensor  # (V·B, D), L2-normalised
    prototypes: torch.Tensor  # (K, D), L2-normalised, times `scale`
    queue: torch.Tensor | None  # (|A|, L, D) or None
    n_crops: int
    crops_for_assign: tuple

    @property
    def scores(self) -> torch.Tensor:
        return self.embeddings @ self.prototypes.t()

    @property
    def queue_scores(self):
        return None if self.queue is None else self.queue @ self.prototypes.t()


def make_problem(n_crops=4, batch=6, prototypes=20, dim=8, queue=0, crops_for_assign=(0, 1),
                 scale=1.0, dtype=torch.float32, seed=0) -> Problem:
    """Scores are bounded by ``scale`` (unit embeddings against prototypes of norm ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n_crops * batch, dim, generator=g, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(prototypes, dim, generator=g, dtype=torch.float64), dim=1) * scale
    q = None
    if queue:
        q = F.normalize(torch.randn(len(crops_for_assign), queue, dim, generator=g, dtype=torch.float64), dim=-1)
        q = q.to(dtype)
    return Problem(z.to(dtype), c.to(dtype), q, n_crops, tuple(crops_for_assign))


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| / max |expected| (absolute error when expected is all zero)."""
    actual = actual.detach().double()
    expected = expected.detach().double()
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    return err / scale if scale > 0 else err


def logit_tolerance(scores: torch.Tensor, epsilon: float, floor: float = 1e-5) -> float:
    """Error bound for float32 Sinkhorn codes: the logits x/ε carry an absolute rounding error
    of a few ulp of max|x/ε|, which exp turns into a relative error of the codes."""
    return max(floor, 8 * torch.finfo(torch.float32).eps * scores.abs().max().item() / epsilon)
