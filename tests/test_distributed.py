"""Two gloo ranks equal one process holding the concatenated batch (DESIGN §5b)."""
import pytest
import torch
import torch.distributed as dist

from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels import sinkhorn, swav_loss

V, B, K, D, L = 4, 3, 10, 5, 4  # per rank: B images, L queued rows per assign crop
WORLD = 2


def full_problem():
    return make_problem(n_crops=V, batch=B * WORLD, prototypes=K, dim=D, queue=L * WORLD)


def shard_rows(x, rank):
    """Rows of rank ``rank`` from a crop-major (V·B·W, ·) tensor, kept crop-major."""
    return x.view(V, WORLD, B, -1)[:, rank].reshape(V * B, -1)


def rank_loss(rank, world_size, backend):
    p = full_problem()
    z = shard_rows(p.embeddings, rank).clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    queue = p.queue.view(2, WORLD, L, D)[:, rank]
    loss = swav_loss(z, c, nmb_crops=V, queue=queue, process_group=dist.group.WORLD, backend=backend)
    loss.backward()
    return {"loss": loss.detach(), "z_grad": z.grad, "c_grad": c.grad}


def rank_sinkhorn_uneven(rank, world_size, backend, iterations):
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(5))
    rows = x[:3] if rank == 0 else x[3:]  # 3 rows on rank 0, 8 on rank 1
    return sinkhorn(rows, epsilon=0.05, iterations=iterations, process_group=dist.group.WORLD, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_two_ranks_equal_one_process_on_concatenated_batch(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    results = run_in_processes(rank_loss, WORLD, backend)
    p = full_problem()
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    loss = swav_loss(z, c, nmb_crops=V, queue=p.queue, backend="reference")
    loss.backward()
    mean_loss = sum(r["loss"] for r in results) / WORLD  # each rank's loss is a mean over its own B
    assert abs(mean_loss.item() - loss.item()) <= 1e-6 * loss.item()
    for rank, r in enumerate(results):  # DDP averages gradients: W · one-process grad = rank's grad
        assert rel_err(r["z_grad"], WORLD * shard_rows(z.grad, rank)) <= 1e-5
    assert rel_err(sum(r["c_grad"] for r in results) / WORLD, c.grad) <= 1e-5


def test_uneven_rows_per_rank():
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(5))
    for iterations in (0, 3):
        results = run_in_processes(rank_sinkhorn_uneven, WORLD, "reference", iterations)
        expected = sinkhorn(x, epsilon=0.05, iterations=iterations, backend="reference")
        assert rel_err(torch.cat(results), expected) <= 1e-6


def test_group_of_one_rank_makes_no_collective_calls():
    results = run_in_processes(_one_rank_group, 1)
    assert results[0]


def _one_rank_group(rank, world_size):
    calls = []
    original = dist.all_reduce
    dist.all_reduce = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        swav_loss(torch.randn(6, 5), nmb_crops=2, process_group=dist.group.WORLD, backend="reference")
    finally:
        dist.all_reduce = original
    return calls == []
