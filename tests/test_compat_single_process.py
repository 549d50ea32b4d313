"""Every adapter in one process makes no collective call: without torch.distributed, and with
torch.distributed initialised on a single rank (where the trainers reduce over the world)."""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist

from problems import make_problem
from swav_kernels.compat import dinov2, facebook_swav, lightly, solo_learn, vissl

COLLECTIVES = ["all_reduce", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "broadcast", "barrier", "all_to_all"]


def run_every_adapter():
    p = make_problem(n_crops=4, batch=3, prototypes=6, dim=4, queue=3)
    scores = p.scores.clone().requires_grad_()
    crops = list(scores.split(3))
    for iterations in (0, 3):
        lightly.SwaVLoss(sinkhorn_iterations=iterations, sinkhorn_gather_distributed=True)(
            crops[:2], crops[2:], list(p.queue_scores)).backward()
        lightly.sinkhorn(crops[0], iterations, gather_distributed=True)
        codes = [solo_learn.SinkhornKnopp(iterations, 0.05, world_size=1)(c) for c in crops]
        solo_learn.swav_loss_func(crops, codes).backward()
        facebook_swav.distributed_sinkhorn(crops[0], 0.05, iterations)
        queue = torch.ones(2, 3, 4)  # full: used
        loss, _ = facebook_swav.swav_loss_block(scores, p.embeddings, p.prototypes, queue, nmb_crops=[2, 2],
                                                sinkhorn_iterations=iterations)
        loss.backward()
        config = {"temperature": 0.1, "crops_for_assign": [0, 1], "num_crops": 4, "num_iters": iterations,
                  "epsilon": 0.05, "use_double_precision": False, "num_prototypes": [6], "embedding_dim": 4,
                  "temp_hard_assignment_iters": 0, "output_dir": "",
                  "queue": {"local_queue_length": 3, "start_iter": 0}}
        vissl.SwAVLoss(config)([p.embeddings, scores], None).backward()
        dinov2.sinkhorn_knopp_teacher(scores, 0.07, iterations)
        dinov2.ibot_sinkhorn_knopp_teacher(scores, 0.07, torch.tensor([12]), iterations)


@pytest.fixture
def no_collectives(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a collective was called in a single-process run")

    for name in COLLECTIVES:
        monkeypatch.setattr(dist, name, refuse)


def test_without_torch_distributed(no_collectives):
    assert not dist.is_initialized()
    run_every_adapter()


def test_with_one_rank_initialised(no_collectives):
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            run_every_adapter()
        finally:
            dist.destroy_process_group()
