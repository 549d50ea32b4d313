"""A whole ``swav_loss`` call on the CUDA backend, prepared once per call signature (DESIGN.md §3).

``swav_kernels.loss`` asks the backend to prepare the first call of each signature, after every
argument check, and reuses what it returns for later calls with the same signature (shapes, strides,
dtypes, device, ``requires_grad``, grad mode, hyper-parameters). Here that is the Sinkhorn plan and
the loss plan bound together with what the signature fixes (which gradients are needed, whether
there is a queue), so a call runs the Sinkhorn's steps and one ``torch.autograd.Function``, with no
check, plan lookup or ``.contiguous()`` left in it. One process only (the collectives of several
ranks take the generic path), inputs contiguous and the queue in the inputs' dtype.
"""
from __future__ import annotations

import torch

from ..kernels import SinkhornRows
from .functions import EmbeddingsLoss, ScoresLoss
from .launchers import KernelLaunchers
from .plans import LossPlan, SinkhornPlan
from .sinkhorn import SinkhornRun, local_codes


class PreparedCall:
    """``(inputs, prototypes, queue, queue_scores) -> loss`` for one call signature."""

    def __init__(self, launch: KernelLaunchers, on_device, sinkhorn: SinkhornPlan, loss: LossPlan,
                 iterations: int, with_queue: bool, need_grads: tuple[bool, ...]) -> None:
        self.launch, self.on_device = launch, on_device
        self.sinkhorn, self.loss, self.iterations = sinkhorn, loss, iterations
        self.with_queue, self.need_grads = with_queue, need_grads

    def _codes(self, main, queue, prototypes) -> torch.Tensor:
        plan = self.sinkhorn
        rows = SinkhornRows(main, queue if self.with_queue else None, plan.crops, plan.batch, prototypes)
        with torch.no_grad():
            return local_codes(SinkhornRun(self.launch, plan, rows), self.iterations)

    def __call__(self, inputs, prototypes, queue, queue_scores) -> torch.Tensor:
        with self.on_device(inputs.device):
            if prototypes is None:
                codes = self._codes(inputs, queue_scores, None)
                return ScoresLoss.apply(inputs, codes, self.launch, self.loss, *self.need_grads)
            codes = self._codes(inputs, queue, prototypes)
            return EmbeddingsLoss.apply(inputs, prototypes, codes, self.launch, self.loss, *self.need_grads)
