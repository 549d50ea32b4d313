"""The per-call budget of DESIGN.md §5a, counted on CPU for the Triton backend (tests/launch_count.py):
device launches per forward + backward, host synchronisations and host-made tensors per call.

The interpreter offers only a few programs per launch (swav_kernels/triton/launch.py), so these
small problems take the split code paths (extra merge launches) as well as the plain ones.
"""
import pytest
import torch

pytest.importorskip("triton")

from launch_count import DeviceWork  # noqa: E402
from problems import make_problem  # noqa: E402
from swav_kernels import SwAVLoss, sinkhorn, swapped_prediction_loss, swav_loss  # noqa: E402
from swav_kernels.triton import embeddings_grad, embeddings_loss  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED_BUDGET, SCORES_BUDGET, QUEUE_UPDATE = 12, 10, 1
SHAPES = {  # rows and prototypes that give no splits, and both splits, with the interpreter's tiles
    "no-splits": dict(n_crops=8, batch=32, prototypes=256, dim=16, queue=6),
    "splits": dict(n_crops=8, batch=16, prototypes=40, dim=16, queue=24),
}


def fused_step(p, iterations=3):
    z = p.embeddings.to(DEVICE).requires_grad_()
    c = p.prototypes.to(DEVICE).requires_grad_()
    queue = p.queue.to(DEVICE)
    with DeviceWork() as work:
        loss = swav_loss(z, c, nmb_crops=p.n_crops, queue=queue, sinkhorn_iterations=iterations, backend="triton")
        loss.backward()
    return work, loss, z, c


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fused_path_stays_within_the_launch_budget(shape):
    work, loss, z, c = fused_step(make_problem(**SHAPES[shape]))
    assert z.grad is not None and c.grad is not None and torch.isfinite(loss)
    print(f"{len(work.launches)} launches: {work.launches}")
    assert len(work.launches) <= FUSED_BUDGET, work.launches
    assert sum(name.startswith("triton:") for name in work.launches) >= 2 * 3 + 2
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


def test_the_split_shape_takes_the_split_paths():
    # the "splits" shape must split the loss forward and the backward (their partials added by the last
    # program of each group, in the same launch), else the budget test above proves less
    from swav_kernels import loss as loss_module

    loss_module._PREPARED.clear()
    fused_step(make_problem(**SHAPES["splits"]))
    (plan,) = loss_module._PREPARED.values()
    forward, backward = plan.forward_launches[-1], plan.backward_launches[0]
    assert forward.grid[1] > 1 and not forward.constexprs["FINAL"] and not backward.constexprs["FINAL"]
    if DEVICE == "cpu":  # the interpreter's rules (4 programs): this shape needs no split; a GPU's rules split it
        loss_module._PREPARED.clear()
        fused_step(make_problem(**SHAPES["no-splits"]))
        (plan,) = loss_module._PREPARED.values()
        assert plan.forward_launches[-1].constexprs["FINAL"] and plan.backward_launches[0].constexprs["FINAL"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_scores_path_stays_within_the_launch_budget(shape):
    p = make_problem(**SHAPES[shape])
    s = p.scores.to(DEVICE).requires_grad_()
    queue_scores = p.queue_scores.to(DEVICE)
    with DeviceWork() as work:
        loss = swav_loss(s, nmb_crops=p.n_crops, queue_scores=queue_scores, backend="triton")
        loss.backward()
    assert s.grad is not None and torch.isfinite(loss)
    assert len(work.launches) <= SCORES_BUDGET, work.launches
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


def test_module_queue_update_adds_one_launch_once_full():
    p = make_problem(n_crops=8, batch=4, prototypes=60, dim=16)
    module = SwAVLoss(nmb_crops=[2, 6], queue_length=8, feat_dim=16, backend="triton").to(DEVICE)
    z = p.embeddings.to(DEVICE).requires_grad_()
    c = p.prototypes.to(DEVICE).requires_grad_()
    for _ in range(2):  # fill the queue
        module(z, c).backward()
    assert module.queue_is_full
    z.grad = c.grad = None  # as after optimizer.zero_grad(): nothing to accumulate into
    with DeviceWork() as work:
        module(z, c).backward()
    assert len(work.launches) <= FUSED_BUDGET + QUEUE_UPDATE, work.launches
    assert "triton:_queue_shift_kernel" in work.launches
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


@pytest.mark.parametrize("call", ["sinkhorn", "swapped_prediction_loss", "forward-only"])
def test_other_entry_points_make_no_host_sync(call):
    p = make_problem(n_crops=4, batch=3, prototypes=21, dim=8)
    with DeviceWork() as work:
        if call == "sinkhorn":
            sinkhorn(p.scores.view(4, 3, -1).to(DEVICE), backend="triton")
        elif call == "swapped_prediction_loss":
            codes = torch.softmax(torch.randn(2, 3, 21), dim=-1).to(DEVICE)
            s = p.scores.to(DEVICE).requires_grad_()
            swapped_prediction_loss(s, codes, (0, 1), backend="triton").backward()
        else:
            with torch.no_grad():
                swav_loss(p.embeddings.to(DEVICE), p.prototypes.to(DEVICE), nmb_crops=4, backend="triton")
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


def test_the_counter_sees_syncs_and_launches():
    # the harness itself: a known sync, a host tensor and launches are all recorded
    x = torch.randn(4)
    with DeviceWork() as work:
        y = x * 2
        bool(y.sum() > 0)
        torch.tensor([1.0, 2.0])
        _ = y.view(2, 2)
    assert work.launches.count("mul") == 1 and "sum" in work.launches and "gt" in work.launches
    assert work.syncs and work.host_tensors
    assert "view" not in work.launches


def test_check_finite_inputs_is_the_one_synchronising_option():
    p = make_problem(n_crops=4, batch=3, prototypes=21, dim=8)
    with DeviceWork() as work:
        swav_loss(p.embeddings.to(DEVICE), p.prototypes.to(DEVICE), nmb_crops=4, backend="triton",
                  check_finite_inputs=True)
    assert work.syncs
    assert embeddings_loss and embeddings_grad  # the kernels the budget counts are importable
