"""The CUDA backend's per-call budget of DESIGN.md §5a, counted on the CPU: torch's ops (the matmuls
and a few small ones) and the kernels the emulation launches (tests/launch_count.py), in order, per
forward + backward; and no host synchronisation or host-made tensor per call.

The counts are of fp32 calls: on a CPU the 16-bit matmuls upcast their operands first
(swav_kernels/cuda/matmul.py), ops a GPU does not run (there ``torch.mm(..., out_dtype=float32)``
is one launch), so a 16-bit call counts the same on a GPU.
"""
import pytest
import torch

from cuda_emulated_backend import emulated_backend, requires_emulation
from launch_count import DeviceWork
from problems import make_problem
from swav_kernels import SwAVLoss, sinkhorn, swapped_prediction_loss, swav_loss

pytestmark = requires_emulation

SINKHORN = ["cuda:sinkhorn_columns_kernel", "cuda:sinkhorn_rows_kernel"] * 2 + ["cuda:sinkhorn_columns_kernel",
                                                                                 "cuda:sinkhorn_codes_kernel"]
LOSS_TAIL = ["sum", "ones_like", "cuda:scale_gradients_kernel"]  # the loss, autograd's seed, the backward
# swav-1gpu's call (queue on, 2 assign crops, T = 3) with its loss in one chunk: 15 launches
FUSED_ONE_CHUNK = ["mm", "mm", *SINKHORN, "mm", "cuda:swapped_loss_kernel", "mm", "mm", *LOSS_TAIL]
SCORES = [*SINKHORN, "cuda:swapped_loss_kernel", *LOSS_TAIL]  # 10 launches
FUSED_BUDGET, SCORES_BUDGET, QUEUE_UPDATE = 15, 10, 1


def _leaves(p):
    return p.embeddings.clone().requires_grad_(), p.prototypes.clone().requires_grad_(), p.queue.clone()


def test_fused_path_launches_at_swav_1gpu():
    backend = emulated_backend()
    z, c, queue = _leaves(make_problem(n_crops=8, batch=8, prototypes=64, dim=16, queue=6))
    with DeviceWork() as work:
        swav_loss(z, c, nmb_crops=[2, 6], queue=queue, backend=backend).backward()
    print(f"{len(work.launches)} launches: {work.launches}")
    assert work.launches == FUSED_ONE_CHUNK and len(work.launches) == FUSED_BUDGET
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


def test_each_further_chunk_adds_five_launches():
    """Chunks of two images of eight: the embeddings gathered, scores, the kernel, ∂Z, ∂C added."""
    backend = emulated_backend("cuda_emu_chunks2")  # at K = 70, V = 4: two fp32 images per chunk
    p = make_problem(n_crops=4, batch=8, prototypes=70, dim=16, queue=6)
    z, c, queue = _leaves(p)
    with DeviceWork() as work:
        swav_loss(z, c, nmb_crops=4, queue=queue, backend=backend).backward()
    loss_part = work.launches[work.launches.index("cuda:sinkhorn_codes_kernel") + 1:]
    first = ["copy_", "mm", "cuda:swapped_loss_kernel", "mm", "mm"]
    further = ["copy_", "mm", "cuda:swapped_loss_kernel", "mm", "addmm_"]
    assert loss_part == first + further * 3 + LOSS_TAIL, loss_part
    assert not work.syncs and not work.host_tensors


def test_recomputed_queue_scores_take_a_matmul_and_a_kernel_per_chunk():
    backend = emulated_backend("cuda_emu_chunks1")  # queue scores recomputed in chunks of 3 rows at K = 70
    p = make_problem(n_crops=4, batch=2, prototypes=70, dim=16, queue=7)
    with DeviceWork() as work:
        sinkhorn_launches = work.launches
        with torch.no_grad():
            swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue=p.queue, backend=backend)
    chunks = 2 * 3  # 2 groups × ceil(7 / 3) chunks, in each of the 2·T − 1 = 5 passes over the queue
    sinkhorn_part = sinkhorn_launches[:sinkhorn_launches.index("cuda:sinkhorn_codes_kernel") + 1]
    assert sinkhorn_part.count("cuda:sinkhorn_columns_kernel") == 3 * (chunks + 1)
    assert sinkhorn_part.count("cuda:sinkhorn_rows_kernel") == 2 * (chunks + 1)
    assert sinkhorn_part.count("mm") == 1 + 5 * chunks  # the batch rows once, the queue at every pass
    assert not work.syncs and not work.host_tensors


def test_scores_path_launches():
    backend = emulated_backend()
    p = make_problem(n_crops=8, batch=8, prototypes=64, dim=16, queue=6)
    s, queue_scores = p.scores.clone().requires_grad_(), p.queue_scores.clone()
    with DeviceWork() as work:
        swav_loss(s, nmb_crops=8, queue_scores=queue_scores, backend=backend).backward()
    assert work.launches == SCORES and len(work.launches) == SCORES_BUDGET, work.launches
    assert not work.syncs and not work.host_tensors


def test_no_grad_skips_the_gradient_matmuls():
    backend = emulated_backend()
    p = make_problem(n_crops=8, batch=8, prototypes=64, dim=16, queue=6)
    with DeviceWork() as work, torch.no_grad():
        swav_loss(p.embeddings, p.prototypes, nmb_crops=8, queue=p.queue, backend=backend)
    assert work.launches == ["mm", "mm", *SINKHORN, "mm", "cuda:swapped_loss_kernel", "sum"], work.launches


def test_module_queue_update_adds_one_launch_once_full():
    backend = emulated_backend()
    p = make_problem(n_crops=8, batch=4, prototypes=60, dim=16)
    module = SwAVLoss(nmb_crops=[2, 6], queue_length=8, feat_dim=16, backend=backend)
    z, c = p.embeddings.clone().requires_grad_(), p.prototypes.clone().requires_grad_()
    for _ in range(2):  # fill the queue
        module(z, c).backward()
    assert module.queue_is_full
    z.grad = c.grad = None  # as after optimizer.zero_grad(): nothing to accumulate into
    with DeviceWork() as work:
        module(z, c).backward()
    assert len(work.launches) == FUSED_BUDGET + QUEUE_UPDATE, work.launches
    assert "cuda:shift_queue_kernel" in work.launches
    assert not work.syncs and not work.host_tensors


@pytest.mark.parametrize("call", ["sinkhorn", "swapped_prediction_loss", "iterations-0"])
def test_other_entry_points_make_no_host_sync(call):
    backend = emulated_backend()
    p = make_problem(n_crops=4, batch=3, prototypes=21, dim=8, queue=2)
    codes = torch.softmax(torch.randn(2, 3, 21), dim=-1)
    s = p.scores.clone().requires_grad_()
    with DeviceWork() as work:
        if call == "sinkhorn":
            sinkhorn(p.scores.view(4, 3, -1), backend=backend)
        elif call == "swapped_prediction_loss":
            swapped_prediction_loss(s, codes, (0, 1), backend=backend).backward()
        else:
            swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue=p.queue, sinkhorn_iterations=0, backend=backend)
    assert not work.syncs and not work.host_tensors, (work.syncs, work.host_tensors)


def test_the_counter_sees_emulated_kernels():
    """The harness itself: a kernel launched by the emulation is counted once, in order with torch ops."""
    from cuda_emulation import build

    from swav_kernels.cuda.launchers import KernelLaunchers

    kernels = KernelLaunchers(build.build(), stream=None)
    queue = torch.randn(1, 5, 3)
    with DeviceWork() as work:
        embeddings = torch.randn(2, 3) * 2
        kernels.shift_queue(queue, embeddings, [1], 1)
        queue.sum()
    assert work.launches == ["randn", "mul", "cuda:shift_queue_kernel", "sum"], work.launches
