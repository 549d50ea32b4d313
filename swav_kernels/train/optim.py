"""Optimiser and learning-rate schedule of facebookresearch/swav ``main_swav.py``.

SwAV wraps ``SGD(momentum=0.9, weight_decay=wd)`` in apex's ``LARC(trust_coefficient=0.001,
clip=False)``: every parameter tensor's gradient (weight decay added) is scaled by
``0.001·‖w‖ / (‖g‖ + wd·‖w‖ + 1e-8)`` before the SGD step. timm's ``Lars`` implements exactly
that (``trust_clip=False``; ``always_adapt=True`` keeps the scaling when ``wd = 0``, as LARC
does), so it is used here rather than a copy.

Schedule: ``warmup_epochs`` of linear warm-up from ``start_warmup`` to ``base_lr``
(``np.linspace``, both ends included), then a cosine from ``base_lr`` to ``final_lr`` over
the remaining iterations; the learning rate is set per iteration.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

MOMENTUM = 0.9
TRUST_COEFFICIENT = 0.001


def build_optimizer(params, base_lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 + LARS/LARC scaling (timm ``Lars``), learning rate ``base_lr``."""
    from timm.optim import Lars

    return Lars(
        params,
        lr=base_lr,
        momentum=MOMENTUM,
        weight_decay=weight_decay,
        trust_coeff=TRUST_COEFFICIENT,
        trust_clip=False,
        always_adapt=True,
    )


class WarmupCosine:
    """``iteration → lr / base_lr`` for :class:`torch.optim.lr_scheduler.LambdaLR`.

    A callable object (not a closure) so the scheduler's ``state_dict`` records its
    parameters and reloads with ``weights_only=True``.
    """

    def __init__(self, base_lr: float, final_lr: float, start_warmup: float, warmup_iters: int, total_iters: int):
        if base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr}")
        if not 0 <= warmup_iters <= total_iters:
            raise ValueError(f"warmup_iters must be in [0, total_iters={total_iters}], got {warmup_iters}")
        self.base_lr = float(base_lr)
        self.final_lr = float(final_lr)
        self.start_warmup = float(start_warmup)
        self.warmup_iters = int(warmup_iters)
        self.total_iters = int(total_iters)

    def lr(self, iteration: int) -> float:
        """The learning rate of ``iteration`` (0-based)."""
        if iteration < self.warmup_iters:
            if self.warmup_iters == 1:
                return self.start_warmup
            return self.start_warmup + (self.base_lr - self.start_warmup) * iteration / (self.warmup_iters - 1)
        cosine_iters = self.total_iters - self.warmup_iters
        t = min(iteration - self.warmup_iters, cosine_iters)
        return self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * t / max(cosine_iters, 1)))

    def __call__(self, iteration: int) -> float:
        return self.lr(iteration) / self.base_lr


def build_schedule(
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    final_lr: float,
    start_warmup: float,
    warmup_epochs: int,
    epochs: int,
    iters_per_epoch: int,
) -> LambdaLR:
    """The per-iteration schedule; call ``.step()`` once after every optimiser step."""
    schedule = WarmupCosine(base_lr, final_lr, start_warmup, warmup_epochs * iters_per_epoch, epochs * iters_per_epoch)
    return LambdaLR(optimizer, schedule)
