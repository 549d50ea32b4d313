"""On a GPU: a forward + backward never synchronises with the host, is captured in a CUDA graph
(``torch.cuda.make_graphed_callables`` and ``torch.compile(mode="reduce-overhead")``), and the
replays equal eager bitwise. ``SwAVLoss`` is captured once its queue is full. DESIGN.md §5a.
(On CPU the same no-sync property is asserted by tests/test_launch_budget.py.)"""
import pytest
import torch
import torch.nn.functional as F

from problems import make_problem
from swav_kernels import SwAVLoss, backend_status, swav_loss

pytestmark = pytest.mark.gpu
KERNEL_BACKENDS = ["triton", "cuda"]
DTYPES = [torch.float32, torch.bfloat16]


def _available(backend, dtype):
    reason = backend_status("cuda", dtype)[backend]
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")


def _problem(dtype):
    p = make_problem(n_crops=8, batch=32, prototypes=300, dim=32, queue=64)
    return (p.embeddings.cuda().to(dtype), p.prototypes.cuda().to(dtype), p.queue.cuda().to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_forward_backward_never_synchronises(backend, dtype):
    _available(backend, dtype)
    z, c, queue = _problem(dtype)
    z.requires_grad_()
    c.requires_grad_()
    swav_loss(z, c, nmb_crops=[2, 6], queue=queue, backend=backend).backward()  # warm-up: JIT, caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        swav_loss(z, c, nmb_crops=[2, 6], queue=queue, backend=backend).backward()
        s = (z @ c.t()).detach().requires_grad_()
        swav_loss(s, nmb_crops=[2, 6], queue_scores=queue @ c.t(), backend=backend).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


class Step(torch.nn.Module):
    """A loss step whose prototypes are a parameter (make_graphed_callables differentiates a
    module's parameters, and a function's inputs only)."""

    def __init__(self, prototypes, queue, backend, module=None):
        super().__init__()
        self.prototypes = torch.nn.Parameter(prototypes.clone())
        self.queue, self.backend, self.module = queue, backend, module

    def forward(self, x):
        if self.module is not None:
            return self.module(x, self.prototypes)
        return swav_loss(x, self.prototypes, nmb_crops=[2, 6], queue=self.queue, backend=self.backend)


def _run(fn, step, z):
    step.prototypes.grad = None
    x = z.clone().requires_grad_()
    loss = fn(x)
    loss.backward()
    return loss.detach().clone(), x.grad.clone(), step.prototypes.grad.clone()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_make_graphed_callables_replays_bitwise_equal_to_eager(backend, dtype):
    _available(backend, dtype)
    z, c, queue = _problem(dtype)
    step = Step(c, queue, backend)
    graphed = torch.cuda.make_graphed_callables(step, (z.clone().requires_grad_(),))
    for _ in range(2):
        for replayed, eager in zip(_run(graphed, step, z), _run(step, step, z)):
            assert torch.equal(replayed, eager)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_reduce_overhead_compile_replays_bitwise_equal_to_eager(backend):
    # what users write: the model and the loss compiled, backward() outside the compiled function
    _available(backend, torch.bfloat16)
    z, c, queue = _problem(torch.bfloat16)
    head = torch.nn.Linear(32, 32, device="cuda", dtype=torch.bfloat16)
    prototypes = torch.nn.Parameter(c.clone())

    def forward(x):
        return swav_loss(F.normalize(head(x), dim=1), prototypes, nmb_crops=[2, 6], queue=queue, backend=backend)

    def step(fn):
        prototypes.grad = None
        head.zero_grad(set_to_none=True)
        loss = fn(z)
        loss.backward()
        return loss.detach().clone(), prototypes.grad.clone(), head.weight.grad.clone()

    compiled = torch.compile(forward, mode="reduce-overhead", fullgraph=True, dynamic=False)
    replays = [step(compiled) for _ in range(3)]  # record, then replay
    eager = step(forward)
    for replayed, again, expected in zip(replays[1], replays[2], eager):
        assert torch.equal(replayed, again)
        assert torch.equal(replayed, expected), (replayed.double() - expected.double()).abs().max().item()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_module_is_captured_once_its_queue_is_full(backend):
    _available(backend, torch.float32)
    z, c, _ = _problem(torch.float32)
    filling = SwAVLoss(nmb_crops=[2, 6], queue_length=64, feat_dim=32, backend=backend).cuda()
    with pytest.raises(RuntimeError, match="queue still fills"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            filling(z, c)
    module = SwAVLoss(nmb_crops=[2, 6], queue_length=64, feat_dim=32, backend=backend).cuda()
    step = Step(c, None, backend, module)
    for _ in range(2):  # fill the queue in eager mode: 2 × 32 rows
        _run(step, step, z)
    assert module.queue_is_full
    graphed = torch.cuda.make_graphed_callables(step, (z.clone().requires_grad_(),))
    twin = SwAVLoss(nmb_crops=[2, 6], queue_length=64, feat_dim=32, backend=backend).cuda()
    twin.load_state_dict(module.state_dict())  # after the warm-up steps, which advanced the queue
    eager = Step(c, None, backend, twin)
    for _ in range(3):  # every replay shifts the queue as an eager step does
        for replayed, expected in zip(_run(graphed, step, z), _run(eager, eager, z)):
            assert torch.equal(replayed, expected)
        assert torch.equal(module.queue, twin.queue)
