"""``swav_loss(..., backend="cuda")`` and ``sinkhorn(..., backend="cuda")`` against the
reference at the DESIGN §4 tolerances: fp32 against float64, fp16/bf16 against the
reference evaluated in float32 on the same (upcast) inputs. GPU only (marked ``gpu``)."""
import pytest
import torch

from problems import logit_tolerance, make_problem, rel_err
from swav_kernels import reference as R, sinkhorn, swav_loss

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LOSS_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-3}
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
KW = dict(temperature=0.1, epsilon=0.05)

CASES = {  # name: make_problem kwargs, sinkhorn iterations
    "ragged": (dict(n_crops=4, batch=5, prototypes=37, dim=19), 3),
    "queue": (dict(n_crops=3, batch=6, prototypes=70, dim=33, queue=11), 3),
    "one-assign-crop": (dict(n_crops=4, batch=3, prototypes=129, dim=64, crops_for_assign=(2,)), 3),
    "assign-crops-reversed": (dict(n_crops=5, batch=7, prototypes=65, dim=20, crops_for_assign=(3, 0), queue=9), 3),
    "batch-1": (dict(n_crops=3, batch=1, prototypes=12, dim=4), 3),
    "k-1": (dict(n_crops=3, batch=4, prototypes=1, dim=4), 3),
    "k-1-queue": (dict(n_crops=3, batch=4, prototypes=1, dim=4, queue=3), 3),
    "paper": (dict(n_crops=8, batch=16, prototypes=3000, dim=128), 3),
    "paper-queue": (dict(n_crops=8, batch=8, prototypes=3000, dim=128, queue=200), 3),
    "wide-dim": (dict(n_crops=3, batch=9, prototypes=300, dim=200, queue=40), 3),
    # exp(score/ε) overflows fp32: scores up to 20, /ε = 400
    "overflow": (dict(n_crops=4, batch=6, prototypes=25, dim=6, scale=20.0), 3),
    "overflow-queue": (dict(n_crops=4, batch=6, prototypes=25, dim=6, scale=20.0, queue=10), 3),
}
CASES.update({f"iterations-{t}": (dict(n_crops=4, batch=6, prototypes=71, dim=24, queue=5), t) for t in range(6)})
CASES.update({f"iterations-{t}-one-crop": (dict(n_crops=3, batch=5, prototypes=70, dim=16,
                                                 crops_for_assign=(1,)), t) for t in (0, 1, 5)})


def _on_gpu(p, dtype):
    queue = None if p.queue is None else p.queue.to("cuda", dtype)
    return p.embeddings.to("cuda", dtype), p.prototypes.to("cuda", dtype), queue


def _inputs(p, dtype, from_scores):
    """The tensors a call takes, on the GPU in ``dtype``: (Z, C, queue) or, for the drop-in
    path, (S, queue scores) scored once in ``dtype`` so that every backend sees the same numbers."""
    z, c, queue = _on_gpu(p, dtype)
    if not from_scores:
        return z, c, queue
    return z @ c.t(), None if queue is None else queue @ c.t()


def _loss_and_grads(inputs, n_crops, crops, iterations, backend):
    """(loss, gradient of every differentiable input) through the embeddings or the scores path."""
    args = dict(nmb_crops=n_crops, crops_for_assign=crops, sinkhorn_iterations=iterations, backend=backend, **KW)
    if len(inputs) == 2:
        s = inputs[0].detach().clone().requires_grad_()
        loss = swav_loss(s, queue_scores=inputs[1], **args)
        loss.backward()
        return loss, s.grad
    z, c = (t.detach().clone().requires_grad_() for t in inputs[:2])
    loss = swav_loss(z, c, queue=inputs[2], **args)
    loss.backward()
    return loss, z.grad, c.grad


def _upcast(inputs, dtype):
    return tuple(None if t is None else t.to(dtype) for t in inputs)


def _reference_precision(dtype):
    """fp32 is judged against float64; fp16/bf16 against float32 on the upcast inputs."""
    return torch.float64 if dtype == torch.float32 else torch.float32




@pytest.mark.parametrize("from_scores", [False, True], ids=["embeddings", "scores"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_match_reference(case, dtype, from_scores):
    kwargs, iterations = CASES[case]
    p = make_problem(**kwargs)
    inputs = _inputs(p, dtype, from_scores)
    call = (p.n_crops, p.crops_for_assign, iterations)
    got = _loss_and_grads(inputs, *call, "cuda")
    expected = _loss_and_grads(_upcast(inputs, _reference_precision(dtype)), *call, "reference")
    loss_tol, grad_tol = LOSS_TOL[dtype], GRAD_TOL[dtype]
    assert torch.isfinite(got[0])
    assert got[0].dtype == torch.float32
    assert rel_err(got[0], expected[0]) <= loss_tol
    for actual, ref in zip(got[1:], expected[1:]):
        assert actual.dtype == dtype
        assert rel_err(actual, ref) <= grad_tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("iterations", range(6))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sinkhorn_codes_match_reference(dtype, iterations, scale):
    x = (torch.randn(3, 67, 301, device="cuda") * scale).to(dtype)
    codes = sinkhorn(x, 0.05, iterations, backend="cuda")
    expected = R.sinkhorn_reference(x.to(_reference_precision(dtype)), 0.05, iterations)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    assert rel_err(codes, expected) <= logit_tolerance(x.float(), 0.05)
    if iterations:
        assert torch.allclose(codes.sum(dim=-1), torch.ones(3, 67, device="cuda"), atol=1e-5)


def test_fused_and_drop_in_paths_are_bitwise_reproducible():
    p = make_problem(n_crops=8, batch=32, prototypes=3000, dim=128, queue=64)
    for dtype in DTYPES:
        for from_scores in (False, True):
            inputs = _inputs(p, dtype, from_scores)
            first, second = (_loss_and_grads(inputs, 8, (0, 1), 3, "cuda") for _ in range(2))
            for a, b in zip(first, second):
                assert torch.equal(a, b)


def test_auto_picks_a_kernel_backend_per_shape_on_gpu():
    from swav_kernels.auto_rules import AutoBackend
    from swav_kernels.registry import resolve_backend

    chosen = resolve_backend("auto", torch.device("cuda"), torch.float32)
    assert isinstance(chosen, AutoBackend)
    assert chosen.choose(3000).name in ("triton", "cuda") and chosen.choose(65536).name in ("triton", "cuda")


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_loss_and_recomputed_queue_scores_match_reference(dtype):
    """Budgets that cut the loss into chunks of 3 images and recompute the queue's scores in chunks:
    the out_dtype matmuls on cuBLAS, the ∂C products added chunk by chunk."""
    from swav_kernels import register_backend
    from swav_kernels.cuda.backend import CudaBackend
    from swav_kernels.cuda.plans import Budget

    chunked = CudaBackend(name="cuda_chunked", budget=Budget(queue_scores_bytes=1024, chunk_bytes=8 * 3 * 300 * 6))
    register_backend("cuda_chunked", lambda: chunked)
    p = make_problem(n_crops=8, batch=10, prototypes=300, dim=64, queue=20)
    inputs = _inputs(p, dtype, False)
    got = _loss_and_grads(inputs, 8, (0, 1), 3, "cuda_chunked")
    expected = _loss_and_grads(_upcast(inputs, _reference_precision(dtype)), 8, (0, 1), 3, "reference")
    assert rel_err(got[0], expected[0]) <= LOSS_TOL[dtype]
    for actual, ref in zip(got[1:], expected[1:]):
        assert rel_err(actual, ref) <= GRAD_TOL[dtype]


def test_compiled_training_step_on_cuda_backend():
    p = make_problem(n_crops=4, batch=8, prototypes=100, dim=32)
    z0, c0, _ = _on_gpu(p, torch.float32)

    def step(z, c):
        return swav_loss(torch.nn.functional.normalize(z, dim=1), c, nmb_crops=4, backend="cuda", **KW)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    z, c = z0.clone().requires_grad_(), c0.clone().requires_grad_()
    loss = compiled(z, c)
    loss.backward()
    z_ref, c_ref = z0.double().requires_grad_(), c0.double().requires_grad_()
    expected = swav_loss(torch.nn.functional.normalize(z_ref, dim=1), c_ref, nmb_crops=4, backend="reference", **KW)
    expected.backward()
    assert rel_err(loss, expected) <= 1e-5
    assert rel_err(z.grad, z_ref.grad) <= 1e-4
    assert rel_err(c.grad, c_ref.grad) <= 1e-4


def test_fp32_matmuls_follow_allow_tf32_as_torch_mm_does():
    p = make_problem(n_crops=4, batch=16, prototypes=300, dim=64)
    z, c, _ = _on_gpu(p, torch.float32)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        exact = swav_loss(z, c, nmb_crops=4, backend="cuda", **KW)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = swav_loss(z, c, nmb_crops=4, backend="cuda", **KW)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    expected = swav_loss(z.double(), c.double(), nmb_crops=4, backend="reference", **KW)
    assert rel_err(exact, expected) <= 1e-5
    assert not torch.equal(exact, tf32)  # TF32 products round their inputs to 10 mantissa bits
