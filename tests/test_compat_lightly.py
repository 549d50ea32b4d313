"""swav_kernels.compat.lightly against lightly's own ``lightly/loss/swav_loss.py`` (lightly
1.6.0, ``pip install --no-deps lightly``; loaded by ``compat_upstream``: skipped without it,
a failure in CI).

Tolerances (``rel_err``: max abs error / max abs expected): against lightly run in float64,
DESIGN §4's contract (1e-5 for loss and codes, 1e-4 for gradients); against lightly run in
float32 on the same inputs, 1e-5 for all three (``F32_TOL``: both sides are float32
evaluations of one function, each within 1e-6 of float64 on these inputs, measured).
"""
import re
import sys

import pytest
import torch

from compat_upstream import assert_like_upstream, upstream
from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels.compat import lightly as adapter

# against the upstream in float64: DESIGN §4's contract (loss and codes; gradients)
VALUE_TOL, GRAD_TOL = 1e-5, 1e-4
# against the upstream in float32 on the same inputs (loss, codes and gradients): both are
# float32 evaluations of one function, each measured within 1e-6 of float64 here; 1e-5 leaves
# room for other summation orders, while a difference in what is computed is far above it
F32_TOL = 1e-5


@pytest.fixture
def lightly():
    """lightly's ``lightly.loss.swav_loss`` module."""
    return upstream("lightly")["lightly.loss.swav_loss"]


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

as64 = lambda ts: None if ts is None else [t.double() for t in ts]  # noqa: E731


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("case", CASES)
def test_loss_gradients_and_codes_equal_lightly(lightly, case, iterations):
    n_high, n_low, batch, prototypes, queue = case
    high, low, queue_scores = crop_scores(n_high, n_low, batch, prototypes, queue)
    kwargs = dict(temperature=0.2, sinkhorn_iterations=iterations, sinkhorn_epsilon=0.1)
    loss, grads = evaluate(adapter.SwaVLoss(**kwargs), high, low, queue_scores)
    out = torch.cat((high[0], queue_scores[0])) if queue_scores else high[0]
    codes = adapter.sinkhorn(out, iterations, 0.1)
    assert loss.shape == (1,) and loss.dtype == torch.float32 and codes.dtype == torch.float32
    for dtype, value_tol, grad_tol in ((torch.float32, F32_TOL, F32_TOL), (torch.float64, VALUE_TOL, GRAD_TOL)):
        cast = (lambda ts: ts) if dtype == torch.float32 else as64
        expected, expected_grads = evaluate(lightly.SwaVLoss(**kwargs), cast(high), cast(low), cast(queue_scores))
        assert expected.dtype == dtype
        assert rel_err(loss, expected) <= value_tol
        for grad, expected_grad in zip(grads, expected_grads):
            assert rel_err(grad, expected_grad) <= grad_tol
        assert rel_err(codes, lightly.sinkhorn(out.to(dtype), iterations, 0.1)) <= value_tol


def test_dtype_and_overflow(lightly):
    high, low, _ = crop_scores(scale=10.0)  # exp(10/0.05) overflows float32 in lightly
    assert torch.isnan(lightly.SwaVLoss()(high, low)).all()
    loss = adapter.SwaVLoss()(high, low)
    expected = lightly.SwaVLoss()(as64(high), as64(low))  # e^200 fits in float64
    assert torch.isfinite(loss).all() and rel_err(loss, expected) <= VALUE_TOL
    half = adapter.SwaVLoss()([h.half() for h in high], [t.half() for t in low])
    assert half.shape == (1,) and half.dtype == torch.float16
    assert rel_err(half.float(), expected) <= 2e-3


def test_bad_queue_outputs_are_named():
    high, low, queue_scores = crop_scores(queue=4)
    with pytest.raises(ValueError, match="queue_outputs"):
        adapter.SwaVLoss()(high, low, queue_scores[:1])
    with pytest.raises(ValueError, match="at least 2 crops"):
        adapter.SwaVLoss()(high[:1], [])


def test_patch_swaps_lightlys_loss_and_unpatch_restores_it(lightly, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightly.loss.swav_loss", lightly)
    original_forward, original_sinkhorn = lightly.SwaVLoss.forward, lightly.sinkhorn
    made_before = lightly.SwaVLoss()
    high, low, _ = crop_scores(scale=10.0)  # lightly's own code gives NaN here
    assert torch.isnan(made_before(high, low)).all()
    try:
        assert adapter.patch() is True
        assert adapter.patch() is False  # already patched: nothing changes
        assert lightly.sinkhorn is adapter.sinkhorn
        expected = adapter.SwaVLoss()(high, low)
        assert torch.equal(made_before(high, low), expected)
        assert torch.equal(lightly.SwaVLoss()(high, low), expected)
    finally:
        assert adapter.unpatch() is True
    assert adapter.unpatch() is False
    assert lightly.SwaVLoss.forward is original_forward and lightly.sinkhorn is original_sinkhorn
    assert "forward" in vars(lightly.SwaVLoss)
    assert torch.isnan(made_before(high, low)).all()


def test_patch_where_lightly_does_not_import_names_the_tested_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightly.loss.swav_loss", None)  # as if it did not import
    with pytest.raises(ImportError, match=r"cannot patch lightly: .*pip install --no-deps lightly==1\.6\.0"):
        adapter.patch()


# ---- non-finite inputs: a non-finite result, as in lightly; check_finite_inputs=True raises --
INPUTS = ["high_resolution_outputs", "low_resolution_outputs", "queue_outputs"]


def poisoned(where, value):
    """Inputs with one non-finite entry in the last tensor of ``where``; its name."""
    high, low, queue_scores = crop_scores(queue=4)
    target = {"high_resolution_outputs": high, "low_resolution_outputs": low, "queue_outputs": queue_scores}[where]
    target[-1][1, 2] = value
    return high, low, queue_scores, f"{where}[{len(target) - 1}]"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", INPUTS)
def test_nonfinite_inputs_give_a_nonfinite_loss_or_raise_when_checked(where, value):
    high, low, queue_scores, name = poisoned(where, value)
    assert not torch.isfinite(adapter.SwaVLoss()(high, low, queue_scores)).any()
    with pytest.raises(ValueError, match=re.escape(name) + " contains NaN or infinite"):
        adapter.SwaVLoss(check_finite_inputs=True)(high, low, queue_scores)
    out = torch.cat((high[0], queue_scores[0]))
    out[0, 0] = value
    assert not torch.isfinite(adapter.sinkhorn(out)).all()
    with pytest.raises(ValueError, match="out contains NaN or infinite"):
        adapter.sinkhorn(out, check_finite_inputs=True)


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", INPUTS)
def test_nonfinite_inputs_like_lightly(lightly, where, value, iterations):
    """NaN where lightly's result is NaN, ±inf or (a -inf weight, or +inf in a queue with 0
    iterations) finite: the project's policy for non-finite inputs."""
    high, low, queue_scores, _ = poisoned(where, value)
    kwargs = dict(sinkhorn_iterations=iterations)
    assert_like_upstream(adapter.SwaVLoss(**kwargs)(high, low, queue_scores),
                         lightly.SwaVLoss(**kwargs)(high, low, queue_scores), F32_TOL)
    out = torch.cat((high[-1], queue_scores[-1]))  # clean when the value went into a low-resolution crop
    assert_like_upstream(adapter.sinkhorn(out, iterations), lightly.sinkhorn(out, iterations), F32_TOL,
                         poisoned=where != "low_resolution_outputs")


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
