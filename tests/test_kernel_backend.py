"""The orchestration shared by kernel backends, run on the plain-PyTorch kernel oracle.

Whatever the Triton and CUDA kernels compute, these tests pin down the glue: potentials
Sinkhorn (with overflow and distributed sums), the custom-op losses and their gradients,
and that torch.compile traces them without graph breaks.
"""
import pytest
import torch
import torch.distributed as dist

from kernel_oracle import OracleKernels
from multiprocess import run_in_processes
from problems import logit_tolerance, make_problem, rel_err
from swav_kernels import reference as R, register_backend, sinkhorn, swav_loss
from swav_kernels.kernel_backend import KernelBackend

ORACLE = KernelBackend(OracleKernels())  # registers the oracle's custom ops once, at import
register_backend("oracle", lambda: ORACLE)
KW = dict(temperature=0.1, epsilon=0.05)


@pytest.mark.parametrize("iterations", range(6))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_potential_sinkhorn_equals_reference(iterations, scale):
    x = torch.randn(3, 17, 11) * scale
    expected = R.sinkhorn_reference(x.double(), 0.05, iterations)
    codes = sinkhorn(x, 0.05, iterations, backend="oracle")
    assert torch.isfinite(codes).all()
    assert rel_err(codes, expected) <= logit_tolerance(x, 0.05)


def test_sinkhorn_row_with_vanishing_mass():
    x = torch.randn(1, 6, 4)
    x[0, 0] -= 500.0  # 1e4 below the other rows after /ε
    codes = sinkhorn(x, 0.05, 3, backend="oracle")
    assert torch.isfinite(codes).all()
    assert torch.allclose(codes.sum(dim=2), torch.ones(1, 6), atol=1e-5)
    assert rel_err(codes, R.sinkhorn_reference(x.double(), 0.05, 3)) <= logit_tolerance(x, 0.05)


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("queue", [0, 5])
@pytest.mark.parametrize("crops_for_assign", [(0, 1), (2,), (3, 0)])
def test_losses_and_gradients_equal_reference(queue, crops_for_assign, iterations):
    # 0 iterations: code rows do not sum to 1, so each lse is weighted by its codes' mass
    p = make_problem(n_crops=4, batch=3, prototypes=13, dim=6, queue=queue, crops_for_assign=crops_for_assign)
    args = dict(nmb_crops=4, crops_for_assign=crops_for_assign, queue=p.queue, sinkhorn_iterations=iterations, **KW)
    grads = {}
    for backend in ("oracle", "reference"):
        z = p.embeddings.clone().requires_grad_()
        c = p.prototypes.clone().requires_grad_()
        loss = swav_loss(z, c, backend=backend, **args)
        loss.backward()
        s = p.scores.clone().requires_grad_()
        loss_s = swav_loss(s, backend=backend, **{**args, "queue": None, "queue_scores": p.queue_scores})
        loss_s.backward()
        grads[backend] = (loss, z.grad, c.grad, loss_s, s.grad)
    for actual, expected in zip(grads["oracle"], grads["reference"]):
        assert rel_err(actual, expected) <= 1e-5


def test_forward_without_grad_skips_the_attention_output():
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4)
    with torch.no_grad():
        loss = swav_loss(p.embeddings, p.prototypes, nmb_crops=3, backend="oracle", **KW)
    assert rel_err(loss, swav_loss(p.embeddings, p.prototypes, nmb_crops=3, backend="reference", **KW)) <= 1e-6


def test_custom_ops_pass_opcheck():
    ops = ORACLE.ops
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4, queue=3)
    codes = torch.softmax(torch.randn(2, 2, 7), dim=-1)
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    torch.library.opcheck(ops.embeddings_loss, (z, c, codes, codes.sum(dim=2)[None], (codes @ p.prototypes)[None],
                                                [0, 1], 10.0, True))
    s = p.scores.clone().requires_grad_()
    torch.library.opcheck(ops.scores_loss, (s, codes, [0, 1], 10.0))
    for main, queue, prototypes in ((p.embeddings, p.queue, p.prototypes), (p.scores, p.queue_scores, None)):
        rows = (main, queue, prototypes, [2, 0], 2)
        torch.library.opcheck(ops.sinkhorn, (*rows, 0.05, 3))
        row_stats = (torch.randn(1, 2, 5), torch.rand(1, 2, 5) + 0.5)
        torch.library.opcheck(ops.sinkhorn_column_step, (*rows, 20.0, *row_stats))
        torch.library.opcheck(ops.sinkhorn_column_step, (*rows, 20.0, None, None))
        stats = (torch.randn(1, 2, 7), torch.rand(1, 2, 7) + 0.5)
        torch.library.opcheck(ops.sinkhorn_row_step, (*rows, 20.0, *stats))
        torch.library.opcheck(ops.sinkhorn_codes, (*rows, 20.0, *stats, None, None, True))
        torch.library.opcheck(ops.sinkhorn_codes, (*rows, 20.0, *stats, *row_stats, True))


def _rank_sinkhorn(rank, world_size, iterations):
    x = torch.randn(2, 11, 7, generator=torch.Generator().manual_seed(5)) * 10
    rows = x[:, :3] if rank == 0 else x[:, 3:]
    return sinkhorn(rows, 0.05, iterations, process_group=dist.group.WORLD, backend="oracle")


@pytest.mark.parametrize("iterations", [0, 3])
def test_distributed_sinkhorn_with_uneven_rows(iterations):
    x = torch.randn(2, 11, 7, generator=torch.Generator().manual_seed(5)) * 10
    results = run_in_processes(_rank_sinkhorn, 2, iterations)
    expected = R.sinkhorn_reference(x.double(), 0.05, iterations)
    assert rel_err(torch.cat(results, dim=1), expected) <= logit_tolerance(x, 0.05)


def test_compiled_training_step_has_no_graph_breaks():
    from swav_kernels import registry

    registry._INSTANCES.pop("oracle", None)  # the first resolution happens inside the trace
    registry._RESOLVED.clear()
    p = make_problem(n_crops=4, batch=3, prototypes=13, dim=6)
    prototypes = torch.nn.Linear(6, 13, bias=False)
    prototypes.weight.data.copy_(p.prototypes)

    def forward(z):  # AOTAutograd traces forward and backward from this one graph
        return swav_loss(torch.nn.functional.normalize(z, dim=1), prototypes.weight, nmb_crops=4,
                         backend="oracle", **KW)

    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    z = p.embeddings.clone().requires_grad_()
    loss = compiled(z)
    loss.backward()
    z_ref = p.embeddings.clone().requires_grad_()
    expected = swav_loss(torch.nn.functional.normalize(z_ref, dim=1), p.prototypes, nmb_crops=4,
                         backend="reference", **KW)
    expected.backward()
    assert rel_err(loss, expected) <= 1e-5
    assert rel_err(z.grad, z_ref.grad) <= 1e-5
    c_ref = p.prototypes.clone().requires_grad_()
    swav_loss(torch.nn.functional.normalize(p.embeddings, dim=1), c_ref, nmb_crops=4, backend="reference",
              **KW).backward()
    assert rel_err(prototypes.weight.grad, c_ref.grad) <= 1e-5
