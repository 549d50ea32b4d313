"""The CUDA backend's losses in eager mode: one ``torch.autograd.Function`` per entry point (no
custom-op dispatch: while ``torch.compile`` traces, ``compile_ops.py`` takes over)."""
from __future__ import annotations

import torch

from . import losses

DOUBLE_BACKWARD = ("the CUDA backend's loss is differentiable once: its gradient is computed in the forward "
                   "(create_graph=True / double backward is not supported); use backend='reference' for "
                   "higher-order gradients")


def check_once_differentiable() -> None:
    """Raise where a gradient of the gradient is being recorded (``create_graph=True``)."""
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD)


class EmbeddingsLoss(torch.autograd.Function):
    """loss(Z, C) with ∂Z and ∂C computed in the forward; the backward scales them."""

    @staticmethod
    def forward(ctx, z, c, codes, launch, plan, need_dz: bool, need_dc: bool):
        loss, dz, dc = losses.embeddings_loss_forward(launch, plan, z, c, codes, need_dz, need_dc)
        ctx.save_for_backward(dz, dc)
        ctx.launch, ctx.plan, ctx.dtypes = launch, plan, (z.dtype, c.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad):
        check_once_differentiable()
        dz, dc = ctx.saved_tensors
        plan = ctx.plan
        grad_z, grad_c = losses.embeddings_loss_backward(ctx.launch, grad, dz, dc, ctx.dtypes, plan.coef, plan.n_crops,
                                                         plan.chunk_images)
        return grad_z, grad_c, None, None, None, None, None


class ScoresLoss(torch.autograd.Function):
    """loss(S) with ∂S computed in the forward (in the dtype of S); the backward scales it."""

    @staticmethod
    def forward(ctx, s, codes, launch, plan, need_grad: bool):
        loss, grad = losses.scores_loss_forward(launch, plan, s, codes, need_grad)
        ctx.save_for_backward(grad)
        ctx.launch, ctx.plan = launch, plan
        return loss

    @staticmethod
    def backward(ctx, grad):
        check_once_differentiable()
        (ds,) = ctx.saved_tensors
        return losses.scores_loss_backward(ctx.launch, grad, ds, ctx.plan.coef), None, None, None, None
