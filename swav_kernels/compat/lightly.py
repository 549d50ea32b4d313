"""Drop-in for lightly's SwaV loss (``lightly/loss/swav_loss.py``).

``SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon, sinkhorn_gather_distributed)``
and ``sinkhorn(out, iterations, epsilon, gather_distributed)`` with lightly's signatures,
defaults, input layouts and return conventions:

- every high-resolution crop is an assign crop, and is predicted from every other crop;
- queue outputs (one ``(L, K)`` tensor per high-resolution crop) join the Sinkhorn rows
  of that crop (lightly appends them after the batch; the codes do not depend on the order);
- the Sinkhorn is rank-local unless ``sinkhorn_gather_distributed`` and torch.distributed
  is initialised, then it runs over the default group;
- ``forward`` returns shape ``(1,)`` in the dtype of the inputs; ``sinkhorn`` returns codes
  in the dtype of ``out``;
- NaN or ±inf in an input gives a non-finite loss or codes, as in lightly (no check, no
  host sync); ``check_finite_inputs=True`` (keyword only, on ``SwaVLoss`` and ``sinkhorn``)
  raises ValueError naming the input instead (one host sync per call).

Differences, all deliberate: the Sinkhorn cannot overflow (lightly's ``exp(out/ε)`` is
inf once a score exceeds ~4.4 at ε=0.05 in float32, ~0.55 in float16); with iterations=0
and ranks holding different numbers of rows the codes are scaled by the true global row
count (lightly assumes equal rows); a single crop in total raises ValueError (lightly
divides by zero); ``queue_outputs`` must hold one tensor per high-resolution crop, all
of one length.

``patch()`` makes lightly's own ``SwaVLoss`` (instances made before the call included) and
``sinkhorn`` run through swav_kernels; ``unpatch()`` restores them.

Where each entry point works, and what it was tested against (torch 2.14.1):

- The drop-ins ``SwaVLoss`` and ``sinkhorn`` work everywhere (they import nothing of lightly).
  They are compared with lightly 1.6.0's own ``lightly/loss/swav_loss.py``, loaded directly as a
  file from the installed package (tests/compat_upstream.py).
- ``patch()`` imports lightly's package (``lightly.loss.swav_loss``). Tested with lightly 1.6.0
  installed by ``pip install --no-deps lightly==1.6.0`` (its loss imports torch only): the
  package imports, and the patched lightly loss equals the drop-in bit for bit. Installing lightly
  with its requirements takes torchvision, which must be the release for your torch (see
  ``swav-train --help``). Its errors say whether lightly is missing or installed with a failing
  import (quoting that import's error), and name the drop-ins.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..loss import sinkhorn as _sinkhorn
from ..loss import swav_loss
from ..validation import check_iterations, check_positive_float, check_same_device
from ._common import check_inputs_finite, check_scores, check_views, default_process_group, named_entries
from ._patching import Patch, Trainer, everywhere, import_trainer

__all__ = ["SwaVLoss", "sinkhorn", "patch", "unpatch"]


def _gather_group(gather_distributed: bool):
    """lightly reduces over the default group only when asked to and distributed is initialised."""
    return default_process_group() if gather_distributed else None


@torch.no_grad()
def sinkhorn(
    out: Tensor,
    iterations: int = 3,
    epsilon: float = 0.05,
    gather_distributed: bool = False,
    *,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> Tensor:
    """lightly's ``sinkhorn``: codes ``(N, K)`` of scores ``out (N, K)``, in ``out``'s dtype.

    ``gather_distributed``: the column sums and the total run over every rank of the
    default group (when torch.distributed is initialised). ``check_finite_inputs``
    (keyword only): raise ValueError if ``out`` holds NaN or ±inf (one host sync); by
    default non-finite scores give non-finite codes, as in lightly."""
    check_scores("out", out)
    check_iterations("iterations", iterations)
    check_positive_float("epsilon", epsilon)
    check_inputs_finite(check_finite_inputs, {"out": out})
    codes = _sinkhorn(out, epsilon=epsilon, iterations=iterations,
                      process_group=_gather_group(gather_distributed), backend=backend,
                      check_finite_inputs=False)
    return codes.to(out.dtype)


def _check_settings(temperature, sinkhorn_iterations, sinkhorn_epsilon) -> None:
    """lightly's settings, named as in its ``SwaVLoss(...)``."""
    check_positive_float("temperature", temperature)
    check_iterations("sinkhorn_iterations", sinkhorn_iterations)
    check_positive_float("sinkhorn_epsilon", sinkhorn_epsilon)


def _forward(
    self,
    high_resolution_outputs: List[Tensor],
    low_resolution_outputs: List[Tensor],
    queue_outputs: Optional[List[Tensor]] = None,
) -> Tensor:
    """lightly's ``SwaVLoss.forward``: per-crop ``(B, K)`` scores → loss of shape ``(1,)``."""
    _check_settings(self.temperature, self.sinkhorn_iterations, self.sinkhorn_epsilon)
    high_named = named_entries("high_resolution_outputs", high_resolution_outputs)
    low_named = named_entries("low_resolution_outputs", low_resolution_outputs)
    if not high_named:
        raise ValueError("high_resolution_outputs is empty; pass one (B, K) tensor per high-resolution crop")
    if len(high_named) + len(low_named) < 2:
        raise ValueError("high_resolution_outputs and low_resolution_outputs hold 1 crop in all; SwaV needs at "
                         "least 2 crops (each is predicted from the others)")
    first = check_views(high_named + low_named)
    high = [tensor for _, tensor in high_named]
    low = [tensor for _, tensor in low_named]
    queue_scores = None
    if queue_outputs is not None:
        queue_named = named_entries("queue_outputs", queue_outputs)
        queue_outputs = [tensor for _, tensor in queue_named]
        if len(queue_outputs) != len(high):
            raise ValueError(
                f"queue_outputs must hold one (L, K) tensor per high-resolution crop ({len(high)}), "
                f"got {len(queue_outputs)}"
            )
        for name, queue in queue_named:
            check_scores(name, queue)
            check_same_device(name, queue, "high_resolution_outputs[0]", first)
            if queue.shape != queue_outputs[0].shape or queue.shape[1] != first.shape[1]:
                raise ValueError(
                    f"queue_outputs must be tensors of one shape (L, K={first.shape[1]}, the K of "
                    f"high_resolution_outputs[0]), got shapes {[tuple(q.shape) for q in queue_outputs]}"
                )
        queue_scores = torch.stack([q.detach() for q in queue_outputs])
    check_inputs_finite(getattr(self, "check_finite_inputs", False), {
        "high_resolution_outputs": high, "low_resolution_outputs": low, "queue_outputs": queue_outputs})
    loss = swav_loss(
        high + low,
        crops_for_assign=tuple(range(len(high))),
        temperature=self.temperature,
        epsilon=self.sinkhorn_epsilon,
        sinkhorn_iterations=self.sinkhorn_iterations,
        queue_scores=queue_scores,
        process_group=_gather_group(self.sinkhorn_gather_distributed),
        backend=getattr(self, "backend", "auto"),
        check_finite_inputs=False,
    )
    return loss.to(high[0].dtype).reshape(1)


class SwaVLoss(nn.Module):
    """lightly's ``SwaVLoss`` computed by swav_kernels.

    Args:
        temperature: τ of the softmax over prototypes.
        sinkhorn_iterations: Sinkhorn iterations (≥ 0).
        sinkhorn_epsilon: ε of the Sinkhorn.
        sinkhorn_gather_distributed: Sinkhorn sums over every rank of the default group.
        backend: swav_kernels backend (keyword only; ``"auto"`` picks a kernel where one runs).
        check_finite_inputs: raise ValueError naming the input that holds NaN or ±inf (keyword
            only; one host sync per call). False (default): non-finite inputs give a
            non-finite loss, as in lightly.

    ``forward(high_resolution_outputs, low_resolution_outputs, queue_outputs=None)`` takes
    lists of ``(B, K)`` scores (and ``(L, K)`` queue scores per high-resolution crop) and
    returns the loss with shape ``(1,)`` in the inputs' dtype.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_gather_distributed: bool = False,
        *,
        backend: str = "auto",
        check_finite_inputs: bool = False,
    ):
        super().__init__()
        _check_settings(temperature, sinkhorn_iterations, sinkhorn_epsilon)
        if sinkhorn_gather_distributed and not dist.is_available():
            raise ValueError(
                "sinkhorn_gather_distributed is True but torch.distributed is not available; "
                "set sinkhorn_gather_distributed=False or install a torch build with distributed support"
            )
        self.temperature = temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_gather_distributed = sinkhorn_gather_distributed
        self.backend = backend
        self.check_finite_inputs = check_finite_inputs

    def subloss(self, z: Tensor, q: Tensor) -> Tensor:
        """lightly's cross-entropy of one prediction ``z (B, K)`` against codes ``q (B, K)``
        (kept for code that calls it; ``forward`` does not)."""
        return -torch.mean(torch.sum(q * F.log_softmax(z / self.temperature, dim=1), dim=1))

    forward = _forward


_PATCH = Patch()

LIGHTLY = Trainer(
    name="lightly",
    distribution="lightly",
    works_with=("lightly 1.6.0 (tested on torch 2.14.1), installed without its requirements so that your torch and "
                "torchvision stay: pip install --no-deps lightly==1.6.0"),
    drop_in="from swav_kernels.compat.lightly import SwaVLoss, sinkhorn (lightly's signatures)",
)


def patch() -> bool:
    """Make lightly's ``SwaVLoss`` and ``sinkhorn`` run through swav_kernels.

    Replaces ``SwaVLoss.forward`` on lightly's class (existing instances included) and
    ``sinkhorn`` wherever lightly's modules hold it. Returns False if already patched.
    ImportError where lightly does not import, saying what failed and naming the drop-ins."""
    module = import_trainer("lightly.loss.swav_loss", LIGHTLY)
    swaps = everywhere(module.sinkhorn, sinkhorn, "lightly")
    swaps.append((module.SwaVLoss, "forward", _forward))
    return _PATCH.apply(swaps)


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
