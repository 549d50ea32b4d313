"""swav-train's optimiser and schedule against transcriptions of facebookresearch/swav."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("timm", reason="the trainer's LARS comes from timm (pip install '.[train]')")

from swav_kernels.train.optim import WarmupCosine, build_optimizer, build_schedule  # noqa: E402


def main_swav_schedule(base_lr, final_lr, start_warmup, warmup_epochs, epochs, iters_per_epoch):
    """main_swav.py's lr_schedule array, transcribed."""
    warmup = np.linspace(start_warmup, base_lr, iters_per_epoch * warmup_epochs)
    n_cosine = iters_per_epoch * (epochs - warmup_epochs)
    cosine = np.array(
        [final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * t / n_cosine)) for t in np.arange(n_cosine)]
    )
    return np.concatenate((warmup, cosine))


@pytest.mark.parametrize("warmup_epochs", [0, 1, 3])
def test_schedule_matches_main_swav(warmup_epochs):
    base_lr, final_lr, start, epochs, per_epoch = 4.8, 0.0048, 0.3, 5, 7
    expected = main_swav_schedule(base_lr, final_lr, start, warmup_epochs, epochs, per_epoch)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([param], base_lr, 1e-6)
    scheduler = build_schedule(optimizer, base_lr, final_lr, start, warmup_epochs, epochs, per_epoch)
    seen = []
    for _ in range(epochs * per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-15)


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="base_lr"):
        WarmupCosine(0.0, 0.0, 0.0, 0, 10)
    with pytest.raises(ValueError, match="warmup_iters"):
        WarmupCosine(1.0, 0.0, 0.0, 11, 10)


def apex_larc_sgd_step(params, grads, buffers, lr, weight_decay, momentum=0.9, trust=0.001, eps=1e-8):
    """apex LARC(clip=False) around SGD(momentum, weight_decay), transcribed (float64)."""
    for index, (p, g) in enumerate(zip(params, grads)):
        p_norm, g_norm = p.norm(), g.norm()
        if p_norm != 0 and g_norm != 0:
            adaptive_lr = trust * p_norm / (g_norm + p_norm * weight_decay + eps)
            g = (g + weight_decay * p) * adaptive_lr
        buffers[index] = g.clone() if buffers[index] is None else buffers[index] * momentum + g
        p -= lr * buffers[index]


@pytest.mark.parametrize("weight_decay", [1e-6, 0.0, 0.05])
def test_lars_is_apex_larc_around_sgd(weight_decay):
    torch.manual_seed(0)
    shapes = [(8, 5), (5,), (3, 3, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(shape, dtype=torch.float64)) for shape in shapes]
    reference = [p.detach().clone() for p in params]
    buffers = [None] * len(params)
    optimizer = build_optimizer(params, 0.7, weight_decay)
    for step in range(4):
        grads = [torch.randn(shape, dtype=torch.float64) * (step + 1) for shape in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        apex_larc_sgd_step(reference, grads, buffers, 0.7, weight_decay)
        for p, r in zip(params, reference):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)


def test_lars_step_is_invariant_to_gradient_scale():
    """The layer-wise trust ratio cancels the gradient's norm (weight decay 0)."""
    torch.manual_seed(0)
    weight = torch.randn(6, 4)
    grad = torch.randn(6, 4)
    moved = []
    for scale in (1.0, 1000.0):
        param = torch.nn.Parameter(weight.clone())
        param.grad = grad * scale
        build_optimizer([param], 1.0, 0.0).step()
        moved.append(param.detach() - weight)
    torch.testing.assert_close(moved[0], moved[1], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(moved[0].norm(), 0.001 * weight.norm(), rtol=1e-5, atol=0)
