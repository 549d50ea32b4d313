"""swav_kernels.compat.lightly against lightly's SwaVLoss and sinkhorn.

Two oracles: lightly's own module where it is installed (``pip install --no-deps lightly``;
its top-level ``lightly.loss`` needs torchvision, so the swav module is loaded by path),
and always a float64 transcription of lightly/loss/swav_loss.py (lightly 1.6.0) below.
"""
import importlib
import importlib.util
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels.compat import lightly as adapter


def load_lightly_swav_module():
    """lightly's ``lightly.loss.swav_loss`` module, or None when lightly is not installed."""
    try:
        return importlib.import_module("lightly.loss.swav_loss")
    except ImportError:
        pass
    spec = importlib.util.find_spec("lightly")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "loss" / "swav_loss.py"
    module_spec = importlib.util.spec_from_file_location("lightly.loss.swav_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


LIGHTLY = load_lightly_swav_module()
needs_lightly = pytest.mark.skipif(LIGHTLY is None, reason="lightly is not installed (pip install --no-deps lightly)")


# ---- transcription of lightly/loss/swav_loss.py (lightly 1.6.0), single process ----------
def transcribed_sinkhorn(out, iterations=3, epsilon=0.05):
    q = torch.exp(out / epsilon).t()
    q = q / q.sum()
    rows = q.shape[1]
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True)  # per prototype (lightly has no /K: the next step cancels it)
        q = q / q.sum(dim=0, keepdim=True)
        q = q / rows
    return (q * rows).t()


def transcribed_loss(high, low, queue=None, temperature=0.1, iterations=3, epsilon=0.05):
    n_crops = len(high) + len(low)
    loss = high[0].new_zeros(1)
    for i in range(len(high)):
        with torch.no_grad():
            rows = high[i].detach()
            if queue is not None:
                rows = torch.cat((rows, queue[i].detach()))  # queue after the batch
            q = transcribed_sinkhorn(rows, iterations, epsilon)[: len(high[i])]
        subloss = high[i].new_zeros(1)
        for v, z in enumerate(high + low):
            if v != i:
                subloss = subloss - torch.mean(torch.sum(q * F.log_softmax(z / temperature, dim=1), dim=1))
        loss = loss + subloss / (n_crops - 1)
    return loss / len(high)


# ---- inputs --------------------------------------------------------------------------------
def crop_scores(n_high=2, n_low=3, batch=5, prototypes=7, queue=0, scale=1.0, seed=0, dtype=torch.float32):
    """Per-crop (B, K) scores and (L, K) queue scores per high-resolution crop (or None)."""
    p = make_problem(n_crops=n_high + n_low, batch=batch, prototypes=prototypes, dim=4, queue=queue,
                     crops_for_assign=tuple(range(n_high)), scale=scale, seed=seed, dtype=torch.float64)
    crops = [s.to(dtype) for s in p.scores.split(batch)]
    queue_scores = None if p.queue is None else [q.to(dtype) for q in p.queue_scores]
    return crops[:n_high], crops[n_high:], queue_scores


def leaves(tensors):
    return [t.clone().requires_grad_() for t in tensors]


def evaluate(loss_fn, high, low, queue):
    high, low = leaves(high), leaves(low)
    loss = loss_fn(high, low, queue)
    loss.sum().backward()  # a crop that only feeds codes gets no gradient: None in lightly, zeros here
    return loss, [torch.zeros_like(t) if t.grad is None else t.grad for t in high + low]


CASES = [  # (n_high, n_low, batch, prototypes, queue)
    (2, 3, 5, 7, 0),
    (2, 3, 5, 7, 6),
    (2, 0, 1, 7, 0),  # batch 1
    (1, 2, 4, 1, 3),  # K = 1
    (3, 1, 3, 5, 2),
]


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_equal_the_transcription(case, iterations):
    n_high, n_low, batch, prototypes, queue = case
    high, low, queue_scores = crop_scores(n_high, n_low, batch, prototypes, queue)
    ours = adapter.SwaVLoss(temperature=0.2, sinkhorn_iterations=iterations, sinkhorn_epsilon=0.1)
    loss, grads = evaluate(ours, high, low, queue_scores)
    assert loss.shape == (1,) and loss.dtype == torch.float32
    as64 = lambda ts: None if ts is None else [t.double() for t in ts]  # noqa: E731
    expected, expected_grads = evaluate(
        lambda h, lo, q: transcribed_loss(h, lo, q, temperature=0.2, iterations=iterations, epsilon=0.1),
        as64(high), as64(low), as64(queue_scores))
    assert rel_err(loss, expected) <= 1e-5
    for grad, expected_grad in zip(grads, expected_grads):
        assert rel_err(grad, expected_grad) <= 1e-4


@pytest.mark.parametrize("iterations", [0, 3])
def test_sinkhorn_equals_the_transcription(iterations):
    high, _, queue_scores = crop_scores(queue=4)
    out = torch.cat((high[0], queue_scores[0]))
    codes = adapter.sinkhorn(out, iterations=iterations, epsilon=0.05)
    assert codes.shape == out.shape and codes.dtype == out.dtype
    assert rel_err(codes, transcribed_sinkhorn(out.double(), iterations, 0.05)) <= 1e-5


def test_dtype_and_overflow():
    high, low, _ = crop_scores(scale=10.0)  # exp(10/0.05) overflows float32 in lightly
    loss = adapter.SwaVLoss()(high, low)
    expected = transcribed_loss([h.double() for h in high], [t.double() for t in low])
    assert torch.isfinite(loss).all() and rel_err(loss, expected) <= 1e-5
    half = adapter.SwaVLoss()([h.half() for h in high], [t.half() for t in low])
    assert half.shape == (1,) and half.dtype == torch.float16
    assert rel_err(half.float(), expected) <= 2e-3


def test_bad_queue_outputs_are_named():
    high, low, queue_scores = crop_scores(queue=4)
    with pytest.raises(ValueError, match="queue_outputs"):
        adapter.SwaVLoss()(high, low, queue_scores[:1])
    with pytest.raises(ValueError, match="at least 2 crops"):
        adapter.SwaVLoss()(high[:1], [])


# ---- the real lightly ----------------------------------------------------------------------
@needs_lightly
@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("case", CASES)
def test_equals_lightly(case, iterations):
    n_high, n_low, batch, prototypes, queue = case
    high, low, queue_scores = crop_scores(n_high, n_low, batch, prototypes, queue)
    kwargs = dict(temperature=0.2, sinkhorn_iterations=iterations, sinkhorn_epsilon=0.1)
    loss, grads = evaluate(adapter.SwaVLoss(**kwargs), high, low, queue_scores)
    expected, expected_grads = evaluate(LIGHTLY.SwaVLoss(**kwargs), high, low, queue_scores)
    assert loss.shape == expected.shape and loss.dtype == expected.dtype
    assert rel_err(loss, expected) <= 1e-5
    for grad, expected_grad in zip(grads, expected_grads):
        assert rel_err(grad, expected_grad) <= 1e-4
    out = torch.cat((high[0], queue_scores[0])) if queue_scores else high[0]
    codes = adapter.sinkhorn(out, iterations, 0.1)
    assert rel_err(codes, LIGHTLY.sinkhorn(out, iterations, 0.1)) <= 1e-5


@needs_lightly
def test_transcription_equals_lightly():
    high, low, queue_scores = crop_scores(queue=4)
    expected = LIGHTLY.SwaVLoss()([h.double() for h in high], [t.double() for t in low],
                                  [q.double() for q in queue_scores])
    assert rel_err(transcribed_loss(high, low, queue_scores), expected) <= 1e-6


@needs_lightly
def test_patch_swaps_lightlys_loss_and_unpatch_restores_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightly.loss.swav_loss", LIGHTLY)
    original_forward, original_sinkhorn = LIGHTLY.SwaVLoss.forward, LIGHTLY.sinkhorn
    made_before = LIGHTLY.SwaVLoss()
    high, low, _ = crop_scores(scale=10.0)  # lightly's own code gives NaN here
    assert torch.isnan(made_before(high, low)).all()
    try:
        assert adapter.patch() is True
        assert adapter.patch() is False  # already patched: nothing changes
        assert LIGHTLY.sinkhorn is adapter.sinkhorn
        expected = adapter.SwaVLoss()(high, low)
        assert torch.equal(made_before(high, low), expected)
        assert torch.equal(LIGHTLY.SwaVLoss()(high, low), expected)
    finally:
        assert adapter.unpatch() is True
    assert adapter.unpatch() is False
    assert LIGHTLY.SwaVLoss.forward is original_forward and LIGHTLY.sinkhorn is original_sinkhorn
    assert "forward" in vars(LIGHTLY.SwaVLoss)
    assert torch.isnan(made_before(high, low)).all()


def test_patch_without_lightly_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightly.loss.swav_loss", None)  # as if it did not import
    with pytest.raises(ImportError, match="pip install lightly"):
        adapter.patch()


# ---- two gloo ranks equal one process on the concatenated batch -----------------------------
WORLD, BATCH, QUEUE = 2, 3, 2  # per rank


def full_inputs():
    return crop_scores(n_high=2, n_low=2, batch=BATCH * WORLD, prototypes=6, queue=QUEUE * WORLD, seed=3)


def rank_run(rank, world_size):
    high, low, queue_scores = full_inputs()
    mine = lambda ts, n: [t[rank * n:(rank + 1) * n] for t in ts]  # noqa: E731
    results = {}
    for iterations in (0, 3):
        for use_queue in (False, True):
            loss_fn = adapter.SwaVLoss(sinkhorn_iterations=iterations, sinkhorn_gather_distributed=True)
            queue = mine(queue_scores, QUEUE) if use_queue else None
            loss, grads = evaluate(loss_fn, mine(high, BATCH), mine(low, BATCH), queue)
            codes = adapter.sinkhorn(mine(high, BATCH)[0], iterations, gather_distributed=True)
            results[iterations, use_queue] = (loss.detach(), grads, codes)
    return results


def test_two_ranks_equal_one_process():
    ranks = run_in_processes(rank_run, WORLD)
    high, low, queue_scores = full_inputs()
    for (iterations, use_queue), per_rank in ranks[0].items():
        loss_fn = adapter.SwaVLoss(sinkhorn_iterations=iterations)
        loss, grads = evaluate(loss_fn, high, low, queue_scores if use_queue else None)
        mean_loss = sum(r[iterations, use_queue][0] for r in ranks) / WORLD
        assert rel_err(mean_loss, loss) <= 1e-6
        for crop, grad in enumerate(grads):  # DDP averages: a rank's grad is W × its rows of the full grad
            rank_grads = torch.cat([r[iterations, use_queue][1][crop] for r in ranks]) / WORLD
            assert rel_err(rank_grads, grad) <= 1e-5
        codes = torch.cat([r[iterations, use_queue][2] for r in ranks])
        assert rel_err(codes, adapter.sinkhorn(high[0], iterations)) <= 1e-5
