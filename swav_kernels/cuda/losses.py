"""The swapped-prediction loss of the CUDA backend (DESIGN.md §1), Liger-Kernel's fused linear
cross-entropy design with our kernels: the matmuls are torch calls, ``swapped_loss`` the only kernel.

Forward, per chunk of whole images (``LossPlan.chunks``): scores ``S = Z Cᵀ`` (fp32), then one
launch turns them into the chunk's loss terms and ∂loss/∂S (the codes are constants, so the
gradient is known now), then ``∂Z = ∂S C`` and ``∂C += ∂Sᵀ Z`` in chunk order. Only one chunk of
scores exists at a time. The gradients are kept unscaled (``∂S`` stands for w·softmax − Q, the
factor ``inv_tau / (|A|·(V − 1)·B)`` is applied with the upstream gradient); the backward is one
launch that scales them by the upstream gradient, read on the device. Under ``no_grad`` (or when
neither input requires grad) the gradient matmuls are skipped.
"""
from __future__ import annotations

import torch

from .launchers import KernelLaunchers
from .matmul import add_mm_f32_, mm_f32
from .plans import LossPlan


def embeddings_loss_forward(launch: KernelLaunchers, plan: LossPlan, z: torch.Tensor, c: torch.Tensor,
                            codes: torch.Tensor, need_dz: bool, need_dc: bool):
    """``(loss`` 0-d fp32, ``∂Z`` (V·B, D) fp32 in the chunks' row order or None, ``∂C`` (K, D) fp32 or
    None) for ``z (V·B, D)``, ``c (K, D)`` contiguous and ``codes (|A|, B, K)`` fp32."""
    n_crops, batch, k, d = plan.n_crops, plan.batch, plan.prototypes, plan.dim
    chunks, rows_most = plan.chunks, n_crops * plan.chunk_images
    f32 = dict(device=z.device, dtype=torch.float32)
    loss = torch.empty(batch, **f32)
    scores = torch.empty(rows_most, k, **f32)
    need_grad = need_dz or need_dc
    grad16 = torch.empty(rows_most, k, device=z.device, dtype=z.dtype) if need_grad and plan.sixteen_bit else None
    gathered = torch.empty(rows_most, d, device=z.device, dtype=z.dtype) if len(chunks) > 1 else None
    dz = torch.empty(n_crops * batch, d, **f32) if need_dz else None
    dc = None
    c_t = c.t()
    for first, images in chunks:
        rows = n_crops * images
        zc = z
        if gathered is not None:  # every crop of the chunk's images, crop-major: (V, I, D)
            zc = gathered[:rows]
            zc.view(n_crops, images, d).copy_(z.view(n_crops, batch, d)[:, first:first + images])
        s = mm_f32(zc, c_t, out=scores[:rows])
        grad = None if not need_grad else (s if grad16 is None else grad16[:rows])
        launch.swapped_loss(s.view(n_crops, images, k), codes, plan.crops, first, plan.inv_tau, plan.loss_scale, loss,
                            None if grad is None else grad.view(n_crops, images, k))
        if need_dz:
            mm_f32(grad, c, out=dz[n_crops * first:n_crops * (first + images)])
        if need_dc:
            if dc is None:
                dc = mm_f32(grad.t(), zc)
            else:
                add_mm_f32_(dc, grad.t(), zc)
    return loss.sum(), dz, dc


def embeddings_loss_backward(launch: KernelLaunchers, upstream: torch.Tensor, dz, dc, dtypes, coef: float,
                             n_crops: int, chunk_images: int):
    """``(grad_z`` or None, ``grad_c`` or None) in ``dtypes``: ``upstream · coef ·`` the forward's ∂Z (put
    back in crop-major row order from chunks of ``chunk_images`` images) and ∂C, in one launch."""
    jobs, grad_z, grad_c = [], None, None
    if dz is not None:
        grad_z = torch.empty(dz.shape, device=dz.device, dtype=dtypes[0])
        jobs.append((dz, grad_z, n_crops, dz.shape[0] // n_crops, chunk_images))
    if dc is not None:
        grad_c = torch.empty(dc.shape, device=dc.device, dtype=dtypes[1])
        jobs.append((dc, grad_c, 1, dc.shape[0], dc.shape[0]))
    if jobs:
        launch.scale_gradients(upstream.float(), coef, jobs)
    return grad_z, grad_c


def scores_loss_forward(launch: KernelLaunchers, plan: LossPlan, s: torch.Tensor, codes: torch.Tensor,
                        need_grad: bool):
    """``(loss`` 0-d fp32, unscaled ∂loss/∂S in the dtype of ``s`` or None) for contiguous scores
    ``s (V·B, K)``: one launch and the sum of the per-image terms."""
    n_crops, batch, k = plan.n_crops, plan.batch, plan.prototypes
    loss = torch.empty(batch, device=s.device, dtype=torch.float32)
    grad = torch.empty_like(s) if need_grad else None
    launch.swapped_loss(s.view(n_crops, batch, k), codes, plan.crops, 0, plan.inv_tau, plan.loss_scale, loss,
                        None if grad is None else grad.view(n_crops, batch, k))
    return loss.sum(), grad


def scores_loss_backward(launch: KernelLaunchers, upstream: torch.Tensor, grad: torch.Tensor,
                         coef: float) -> torch.Tensor:
    """``upstream · coef · grad`` in the dtype of ``grad``, one launch."""
    out = torch.empty_like(grad)
    launch.scale_gradients(upstream.float(), coef, [(grad, out, 1, grad.shape[0], grad.shape[0])])
    return out
