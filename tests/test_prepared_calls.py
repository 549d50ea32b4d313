"""Prepared calls (DESIGN §5a): ``swav_loss`` reuses what an earlier call with the same signature
prepared — its checks, its backend, on the Triton backend every launch. The first call of a signature
launches through ``kernel[grid]``; later ones go straight to the compiled kernels on a GPU (under the
interpreter they stay on ``kernel[grid]``). These tests hold the second call to the first bitwise and
both to the reference, and check that every input of the key makes a new plan where it must.
"""
import pytest
import torch

pytest.importorskip("triton")

from problems import make_problem, rel_err  # noqa: E402
from swav_kernels import loss as loss_module  # noqa: E402
from swav_kernels import swav_loss  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-3, 1e-2)}


def step(problem, path, dtype, backend="triton", **kwargs):
    """One fwd+bwd: (loss, gradients)."""
    if path == "fused":
        z = problem.embeddings.to(DEVICE, dtype, copy=True).requires_grad_()
        c = problem.prototypes.to(DEVICE, dtype, copy=True).requires_grad_()
        queue = None if problem.queue is None else problem.queue.to(DEVICE, dtype)
        loss = swav_loss(z, c, nmb_crops=problem.n_crops, queue=queue, backend=backend, **kwargs)
        leaves = (z, c)
    else:
        s = problem.scores.to(DEVICE, dtype, copy=True).requires_grad_()
        queue = None if problem.queue is None else problem.queue_scores.to(DEVICE, dtype)
        loss = swav_loss(s, nmb_crops=problem.n_crops, queue_scores=queue, backend=backend, **kwargs)
        leaves = (s,)
    loss.backward()
    return loss.detach(), tuple(t.grad for t in leaves)


PROBLEMS = {
    "queue": dict(n_crops=4, batch=5, prototypes=37, dim=9, queue=6),
    "no-queue": dict(n_crops=3, batch=8, prototypes=64, dim=16),
    "one-iteration": dict(n_crops=4, batch=3, prototypes=21, dim=8, queue=4),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", ["fused", "scores"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_repeated_calls_equal_the_first_bitwise_and_the_reference(name, path, dtype):
    problem = make_problem(**PROBLEMS[name])
    iterations = 1 if name == "one-iteration" else 3
    loss_module._PREPARED.clear()
    first = step(problem, path, dtype, sinkhorn_iterations=iterations)
    repeats = [step(problem, path, dtype, sinkhorn_iterations=iterations) for _ in range(3)]
    for again in repeats:
        assert torch.equal(again[0], first[0])
        for a, b in zip(again[1], first[1]):
            assert torch.equal(a, b)
    expected = step(problem, path, torch.float32, backend="reference", sinkhorn_iterations=iterations)
    loss_tol, grad_tol = TOLERANCE[dtype]
    assert rel_err(first[0].cpu(), expected[0].cpu()) <= loss_tol
    for a, b in zip(first[1], expected[1]):
        assert rel_err(a.float().cpu(), b.cpu()) <= grad_tol


def test_one_plan_per_signature():
    problem = make_problem(**PROBLEMS["queue"])
    loss_module._PREPARED.clear()
    step(problem, "fused", torch.float32)
    step(problem, "fused", torch.float32)
    assert len(loss_module._PREPARED) == 1
    step(problem, "fused", torch.float32, temperature=0.2)  # another hyper-parameter
    step(problem, "scores", torch.float32)  # another path
    with torch.no_grad():  # no backward: a plan without the gradient's launches
        z = problem.embeddings.to(DEVICE, copy=True).requires_grad_()
        swav_loss(z, problem.prototypes.to(DEVICE), nmb_crops=problem.n_crops, queue=problem.queue.to(DEVICE),
                  backend="triton")
    assert len(loss_module._PREPARED) == 4


def test_a_misaligned_input_gets_its_own_plan_and_the_right_answer():
    # Triton compiles 16-byte-aligned and unaligned pointers apart: the key holds each input's alignment
    problem = make_problem(**PROBLEMS["no-queue"])
    loss_module._PREPARED.clear()
    aligned = step(problem, "fused", torch.float32)
    storage = torch.zeros(problem.embeddings.numel() + 1, device=DEVICE)
    z = storage[1:].view_as(problem.embeddings).copy_(problem.embeddings)  # 4 bytes past an aligned start
    assert z.data_ptr() % 16 != 0
    z.requires_grad_()
    c = problem.prototypes.to(DEVICE, copy=True).requires_grad_()
    for _ in range(2):
        z.grad = c.grad = None
        loss = swav_loss(z, c, nmb_crops=problem.n_crops, backend="triton")
        loss.backward()
    assert len(loss_module._PREPARED) == 2
    assert rel_err(loss.detach().cpu(), aligned[0].cpu()) <= 1e-6
    assert rel_err(z.grad.cpu(), aligned[1][0].cpu()) <= 1e-5


def test_a_cached_signature_still_rejects_bad_arguments():
    # a hit needs every argument equal, types included: True is not the int 1 it compares equal to
    problem = make_problem(**PROBLEMS["queue"])
    step(problem, "fused", torch.float32, sinkhorn_iterations=1)
    with pytest.raises(TypeError, match="sinkhorn_iterations"):
        step(problem, "fused", torch.float32, sinkhorn_iterations=True)
    with pytest.raises(ValueError, match="backend"):
        step(problem, "fused", torch.float32, backend="tritn")


def test_double_backward_is_refused_with_a_clear_error():
    problem = make_problem(**PROBLEMS["no-queue"])
    z = problem.embeddings.to(DEVICE, copy=True).requires_grad_()
    c = problem.prototypes.to(DEVICE, copy=True).requires_grad_()
    loss = swav_loss(z, c, nmb_crops=problem.n_crops, backend="triton")
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.autograd.grad(loss, z, create_graph=True)
