"""The CUDA backend's plans (swav_kernels/cuda/plans.py) at the benchmark shapes of DESIGN.md §5: how
each call is chunked and its memory budget, line by line, computed from the shapes (meta tensors:
nothing is allocated). Arithmetic of the plan, not a measurement."""
import pytest
import torch

from swav_kernels.bench.shapes import NAMED_SHAPES
from swav_kernels.cuda.plans import MiB, Budget, PlanCache, embeddings_loss_plan, sinkhorn_plan
from swav_kernels.kernels import SinkhornRows


def plans(name: str, dtype: torch.dtype, budget: Budget = Budget()):
    shape = NAMED_SHAPES[name]
    crops = tuple(shape.crops_for_assign)
    meta = dict(device="meta", dtype=dtype)
    z = torch.empty(shape.rows, shape.dim, **meta)
    c = torch.empty(shape.prototypes, shape.dim, **meta)
    queue = torch.empty(len(crops), shape.queue, shape.dim, **meta) if shape.queue else None
    codes = torch.empty(len(crops), shape.batch, shape.prototypes, device="meta")
    sinkhorn = sinkhorn_plan(SinkhornRows(z, queue, crops, shape.batch, c), 0.05, 3, budget, "meta")
    loss = embeddings_loss_plan(z, c, codes, crops, 0.1, budget, "meta")
    return sinkhorn, loss


def total(lines) -> float:
    return sum(size for _, size in lines) / MiB


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_swav_1gpu_is_one_chunk_with_the_queue_scores_stored(dtype):
    sinkhorn, loss = plans("swav-1gpu", dtype)
    assert loss.chunks == ((0, 256),) and sinkhorn.queue_chunk == 0 and sinkhorn.one_batch_matmul
    names = " ".join(name for name, _ in sinkhorn.budget() + loss.budget())
    for buffer in ("codes", "queue scores (2, 3840, 3000) fp32, stored", "row potentials", "column potentials",
                   "loss per image", "scores chunk (2048, 3000) fp32", "∂Z (2048, 128) fp32", "∂C (3000, 128)"):
        assert buffer in names, buffer
    assert ("∂S chunk" in names) == (dtype == torch.bfloat16)  # fp32: ∂S overwrites the scores chunk


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_large_k_plans_within_the_700_mib_target(dtype):
    """Every buffer of a large-k fwd+bwd at once (the codes, 512 MiB, dominate): the planned total
    stays under issue 20's 700 MiB of extra memory for bf16 (a plan, not a measured peak)."""
    sinkhorn, loss = plans("large-k", dtype)
    planned = total(sinkhorn.budget()) + total(loss.budget())
    print(sinkhorn.describe(), loss.describe(), sep="\n")
    assert 512 <= planned <= 700, planned
    per_image = 10 * 65536 * (4 + (2 if dtype == torch.bfloat16 else 0))
    assert loss.chunk_images == 64 * MiB // per_image and len(loss.chunks) == -(-1024 // loss.chunk_images)


def test_queue_scores_over_the_budget_are_recomputed_in_chunks():
    sinkhorn, _ = plans("swav-1gpu", torch.bfloat16, Budget(queue_scores_bytes=64 * MiB, chunk_bytes=16 * MiB))
    assert sinkhorn.queue_chunk == 16 * MiB // (3000 * 4) == 1398 and len(sinkhorn.queue_chunks) == 3
    assert sinkhorn.queue_chunks[-1][1] == 3840
    names = [name for name, _ in sinkhorn.budget()]
    assert any("recomputed per pass" in name for name in names) and not any("stored" in name for name in names)


def test_plan_cache_is_bounded():
    cache, built = PlanCache(size=3), []
    for key in range(5):
        cache.get(key, lambda key=key: built.append(key) or key)
    assert len(cache.plans) <= 3 and built == list(range(5))
    assert cache.get(4, lambda: built.append("again")) == 4 and built[-1] == 4  # a hit builds nothing
