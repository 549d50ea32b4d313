"""Drop-in for solo-learn's SwAV loss (``solo/losses/swav.py``, ``solo/utils/sinkhorn_knopp.py``).

- ``swav_loss_func(preds, assignments, temperature=0.1)``: ``assignments[v1]`` holds the
  codes of view v1 for the first ``len(assignments)`` views (solo-learn's training step
  passes the codes of its large crops only: ``get_assignments(preds[:num_large_crops])``,
  e.g. 2 assignments for the 2 + 6 views of ``cifar-multicrop/swav.yaml``); the loss is
  the mean over all pairs (v1 < len(assignments), v2 ≠ v1 among all views) of
  ``−mean_b Σ_k a_v1 log_softmax(p_v2/τ)``, as in solo-learn ≥ 1.0.4. With one assignment
  per view this is also solo-learn ≤ 1.0.3's loss; assignments beyond ``len(preds)`` are
  ignored, as ≤ 1.0.3 does (≥ 1.0.4 raises IndexError). Returns a 0-d tensor in the
  promoted dtype of preds and assignments (float32 under autocast, where solo-learn's
  ``log_softmax`` runs in float32).
- ``SinkhornKnopp(num_iters=3, epsilon=0.05, world_size=1)``: ``forward(Q (N, K))`` returns
  codes ``(N, K)`` in Q's dtype; the sums run over every rank whenever torch.distributed is
  initialised (a group of one rank makes no collective call).

NaN or ±inf in an input gives a non-finite loss or codes, as in solo-learn (no check, no
host sync); ``check_finite_inputs=True`` (keyword only, on ``swav_loss_func`` and
``SinkhornKnopp``) raises ValueError naming the input instead (one host sync per call).

solo-learn's prototypes are a weight-normalised linear layer: pass its output as ``preds``
and the gradient flows through the normalisation as before.

Differences, all deliberate: no overflow in the Sinkhorn; assignments are constants (they
come from ``SinkhornKnopp`` under ``no_grad`` in solo-learn); fewer than 2 views raises
ValueError, and so do no assignments (solo-learn divides by zero); with ``num_iters=0`` the codes are scaled by the
global row count where solo-learn uses rows × ``world_size`` (equal when the argument is
the true world size and ranks hold equal rows).

``patch()`` swaps solo-learn's ``swav_loss_func`` (wherever it was imported) and
``SinkhornKnopp.forward`` for these; ``unpatch()`` restores them.

Where each entry point works, and what it was tested against (torch 2.14.1):

- The drop-ins ``swav_loss_func`` and ``SinkhornKnopp`` work everywhere: they import nothing of
  solo-learn. They are compared with solo-learn 1.0.2's own ``solo/losses/swav.py`` and
  ``solo/utils/sinkhorn_knopp.py``, loaded directly as files from the installed package
  (``pip install --no-deps solo-learn==1.0.2``; tests/compat_upstream.py), not imported.
- ``patch()`` imports solo-learn's package (``solo.losses.swav``, which imports ``solo`` and its
  training stack). solo-learn 1.0.2, the only release on PyPI, cannot be imported beside a torch
  this package supports: it pins torch 1.9.1 and pytorch-lightning 1.4.7 and needs pl_bolts
  (lightning-bolts). ``patch()`` works with solo-learn's repository (main; tested at commit
  9187ea3) and its own requirements, lightning 2.1.2, torchmetrics < 0.12 and setuptools < 81
  (``pkg_resources``, which its ``setup.py`` and lightning 2.1.2 import): there solo-learn's own
  ``tests/methods/test_swav.py`` trains through the patched loss (2 loss and 4 Sinkhorn calls
  reach swav_kernels). Its errors say whether solo-learn is missing or installed with a failing
  import (quoting that import's error), and name the drop-ins.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..loss import sinkhorn, swapped_prediction_loss
from ..validation import check_iterations, check_positive_float, check_same_device, check_tensor
from ._common import check_inputs_finite, check_scores, check_views, default_process_group, loss_dtype, named_entries
from ._patching import Patch, Trainer, everywhere, import_trainer

__all__ = ["SinkhornKnopp", "swav_loss_func", "patch", "unpatch"]


def swav_loss_func(
    preds: List[torch.Tensor],
    assignments: List[torch.Tensor],
    temperature: float = 0.1,
    *,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """solo-learn's SwAV loss.

    Args:
        preds: V ``(B, K)`` prototype scores, one per view (gradients flow into them).
        assignments: ``(B, K)`` codes of the first ``len(assignments)`` views (at least one;
            entries beyond V are ignored): ``assignments[v]`` is predicted from every view but v.
        temperature: τ.
        backend: swav_kernels backend (keyword only).
        check_finite_inputs: raise ValueError naming the entry of preds or assignments that
            holds NaN or ±inf (keyword only; one host sync). False (default): non-finite
            inputs give a non-finite loss, as in solo-learn.
    """
    preds_named = named_entries("preds", preds)
    assignments_named = named_entries("assignments", assignments)
    if len(preds_named) < 2:
        raise ValueError(f"preds must hold at least 2 views (each is predicted from the others), got {len(preds_named)}")
    if not assignments_named:
        raise ValueError("assignments is empty; pass the (B, K) codes of at least one view")
    check_positive_float("temperature", temperature)
    first = check_views(preds_named)
    assignments_named = assignments_named[: len(preds_named)]
    for name, codes in assignments_named:
        check_tensor(name, codes, 2)
        check_same_device(name, codes, "preds[0]", first)
        if codes.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(codes.shape)} but preds[0] has {tuple(first.shape)}; each "
                             "assignment holds the (B, K) codes of one view")
    preds = [tensor for _, tensor in preds_named]
    assignments = [tensor for _, tensor in assignments_named]
    check_inputs_finite(check_finite_inputs, {"preds": preds, "assignments": assignments})
    codes = torch.stack([a.detach() for a in assignments])
    loss = swapped_prediction_loss(preds, codes, range(len(assignments)), temperature, backend,
                                   check_finite_inputs=False)
    return loss.to(loss_dtype(preds[0], assignments[0]))


def _check_knopp_settings(num_iters, epsilon) -> None:
    """solo-learn's ``SinkhornKnopp`` settings, named as in its constructor."""
    check_iterations("num_iters", num_iters)
    check_positive_float("epsilon", epsilon)


@torch.no_grad()
def _sinkhorn_knopp_forward(self, Q: torch.Tensor) -> torch.Tensor:
    """Codes ``(N, K)`` of scores ``Q (N, K)``, in Q's dtype."""
    check_scores("Q", Q)
    _check_knopp_settings(self.num_iters, self.epsilon)
    check_inputs_finite(getattr(self, "check_finite_inputs", False), {"Q": Q})
    codes = sinkhorn(Q, epsilon=self.epsilon, iterations=self.num_iters,
                     process_group=default_process_group(), backend=getattr(self, "backend", "auto"),
                     check_finite_inputs=False)
    return codes.to(Q.dtype)


class SinkhornKnopp(nn.Module):
    """solo-learn's ``SinkhornKnopp`` computed by swav_kernels.

    Args:
        num_iters: Sinkhorn iterations (≥ 0). epsilon: ε.
        world_size: kept for compatibility; the global row count is measured instead.
        backend: swav_kernels backend (keyword only).
        check_finite_inputs: ``forward`` raises ValueError if Q holds NaN or ±inf (keyword
            only; one host sync per call). False (default): non-finite scores give
            non-finite codes, as in solo-learn.
    """

    def __init__(self, num_iters: int = 3, epsilon: float = 0.05, world_size: int = 1, *, backend: str = "auto",
                 check_finite_inputs: bool = False):
        super().__init__()
        _check_knopp_settings(num_iters, epsilon)
        self.num_iters = num_iters
        self.epsilon = epsilon
        self.world_size = world_size
        self.backend = backend
        self.check_finite_inputs = check_finite_inputs

    forward = _sinkhorn_knopp_forward


_PATCH = Patch()


def _known_failure(version, error) -> str | None:
    if version == "1.0.2":
        return ("solo-learn 1.0.2, the only release on PyPI, pins torch 1.9.1 and pytorch-lightning 1.4.7 and needs "
                "pl_bolts (lightning-bolts), so it does not import beside the torch >= 2.11 that swav_kernels needs "
                "(installing its requirements would replace torch).")
    return None


SOLO_LEARN = Trainer(
    name="solo-learn",
    distribution="solo-learn",
    works_with=("solo-learn's repository (main; tested at commit 9187ea3 on torch 2.14.1) and its requirements "
                "lightning 2.1.2, torchmetrics < 0.12 and setuptools < 81: pip install 'setuptools<81' "
                "'lightning==2.1.2' 'torchmetrics<0.12' einops hydra-core timm scipy scikit-learn torch=={torch} "
                "(and torchvision's release for that torch), then pip install --no-build-isolation --no-deps git+https://github.com/vturrisi/solo-learn.git"),
    drop_in=("from swav_kernels.compat.solo_learn import swav_loss_func, SinkhornKnopp (solo-learn's signatures; call "
             "them where solo-learn's SwAV method does)"),
    known_failure=_known_failure,
)


def patch() -> bool:
    """Make solo-learn's ``swav_loss_func`` and ``SinkhornKnopp`` run through swav_kernels.
    Returns False if already patched. Needs an importable solo-learn (its repository's main with
    lightning 2.1.2, torchmetrics < 0.12, setuptools < 81; not the 1.0.2 release): ImportError
    otherwise, saying what failed and naming the drop-ins, which need no solo-learn."""
    losses = import_trainer("solo.losses.swav", SOLO_LEARN)
    knopp = import_trainer("solo.utils.sinkhorn_knopp", SOLO_LEARN)
    swaps = everywhere(losses.swav_loss_func, swav_loss_func, "solo")
    swaps.append((knopp.SinkhornKnopp, "forward", _sinkhorn_knopp_forward))
    return _PATCH.apply(swaps)


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
