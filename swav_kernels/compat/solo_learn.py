"""Drop-in for solo-learn's SwAV loss (``solo/losses/swav.py``, ``solo/utils/sinkhorn_knopp.py``).

- ``swav_loss_func(preds, assignments, temperature=0.1)``: every view is an assign view;
  the mean over all ordered pairs (v1, v2≠v1) of ``−mean_b Σ_k a_v1 log_softmax(p_v2/τ)``.
  Returns a 0-d tensor in the promoted dtype of preds and assignments (float32 under
  autocast, where solo-learn's ``log_softmax`` runs in float32).
- ``SinkhornKnopp(num_iters=3, epsilon=0.05, world_size=1)``: ``forward(Q (N, K))`` returns
  codes ``(N, K)`` in Q's dtype; the sums run over every rank whenever torch.distributed is
  initialised (a group of one rank makes no collective call).

solo-learn's prototypes are a weight-normalised linear layer: pass its output as ``preds``
and the gradient flows through the normalisation as before.

Differences, all deliberate: no overflow in the Sinkhorn; assignments are constants (they
come from ``SinkhornKnopp`` under ``no_grad`` in solo-learn); fewer than 2 views raises
ValueError (solo-learn divides by zero); with ``num_iters=0`` the codes are scaled by the
global row count where solo-learn uses rows × ``world_size`` (equal when the argument is
the true world size and ranks hold equal rows).

``patch()`` swaps solo-learn's ``swav_loss_func`` (wherever it was imported) and
``SinkhornKnopp.forward`` for these; ``unpatch()`` restores them.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..loss import sinkhorn, swapped_prediction_loss
from ._common import default_process_group, loss_dtype
from ._patching import Patch, everywhere, import_trainer

__all__ = ["SinkhornKnopp", "swav_loss_func", "patch", "unpatch"]


def swav_loss_func(
    preds: List[torch.Tensor], assignments: List[torch.Tensor], temperature: float = 0.1, *, backend: str = "auto"
) -> torch.Tensor:
    """solo-learn's SwAV loss.

    Args:
        preds: V ``(B, K)`` prototype scores, one per view (gradients flow into them).
        assignments: at least V ``(B, K)`` codes; ``assignments[v]`` is the target of view v.
        temperature: τ.
        backend: swav_kernels backend (keyword only).
    """
    preds = list(preds)
    assignments = list(assignments)
    if len(preds) < 2:
        raise ValueError(f"preds must hold at least 2 views (each is predicted from the others), got {len(preds)}")
    if len(assignments) < len(preds):
        raise ValueError(f"assignments must hold one (B, K) tensor per view ({len(preds)}), got {len(assignments)}")
    codes = torch.stack([a.detach() for a in assignments[: len(preds)]])
    loss = swapped_prediction_loss(preds, codes, range(len(preds)), temperature, backend)
    return loss.to(loss_dtype(preds[0], assignments[0]))


@torch.no_grad()
def _sinkhorn_knopp_forward(self, Q: torch.Tensor) -> torch.Tensor:
    """Codes ``(N, K)`` of scores ``Q (N, K)``, in Q's dtype."""
    codes = sinkhorn(Q, epsilon=self.epsilon, iterations=self.num_iters,
                     process_group=default_process_group(), backend=getattr(self, "backend", "auto"))
    return codes.to(Q.dtype)


class SinkhornKnopp(nn.Module):
    """solo-learn's ``SinkhornKnopp`` computed by swav_kernels.

    Args:
        num_iters: Sinkhorn iterations (≥ 0). epsilon: ε.
        world_size: kept for compatibility; the global row count is measured instead.
        backend: swav_kernels backend (keyword only).
    """

    def __init__(self, num_iters: int = 3, epsilon: float = 0.05, world_size: int = 1, *, backend: str = "auto"):
        super().__init__()
        self.num_iters = num_iters
        self.epsilon = epsilon
        self.world_size = world_size
        self.backend = backend

    forward = _sinkhorn_knopp_forward


_PATCH = Patch()


def patch() -> bool:
    """Make solo-learn's ``swav_loss_func`` and ``SinkhornKnopp`` run through swav_kernels.
    Returns False if already patched."""
    losses = import_trainer("solo.losses.swav", "pip install solo-learn")
    knopp = import_trainer("solo.utils.sinkhorn_knopp", "pip install solo-learn")
    swaps = everywhere(losses.swav_loss_func, swav_loss_func, "solo")
    swaps.append((knopp.SinkhornKnopp, "forward", _sinkhorn_knopp_forward))
    return _PATCH.apply(swaps)


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
