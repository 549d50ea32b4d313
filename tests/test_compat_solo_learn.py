"""swav_kernels.compat.solo_learn against solo-learn's own ``solo/losses/swav.py``
(``swav_loss_func``) and ``solo/utils/sinkhorn_knopp.py`` (``SinkhornKnopp``) (solo-learn
1.0.2, ``pip install --no-deps solo-learn``; loaded by ``compat_upstream``: skipped without
it, a failure in CI), combined as ``solo/methods/swav.py`` combines them
(``get_assignments`` with the queue).

solo-learn 1.0.2 is the version on the package index; its loss takes one assignment per
view. The multi-crop call of solo-learn >= 1.0.4 (assignments of the large crops only) is
checked against a verbatim copy of the newer ``swav_loss_func`` below.

Tolerances (``rel_err``: max abs error / max abs expected): against solo-learn run in
float64, DESIGN §4's contract (1e-5 for loss and codes, 1e-4 for gradients); against
solo-learn run in float32 on the same inputs, 1e-5 for all three (``F32_TOL``: both sides
are float32 evaluations of one function, each within 1e-6 of float64 here, measured).
"""
import re
import sys
import types

import numpy as np
import pytest
import torch

from compat_upstream import assert_like_upstream, upstream
from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels import swapped_prediction_loss
from swav_kernels.compat import solo_learn as adapter

# against the upstream in float64: DESIGN §4's contract (loss and codes; gradients)
VALUE_TOL, GRAD_TOL = 1e-5, 1e-4
# against the upstream in float32 on the same inputs (loss, codes and gradients): both are
# float32 evaluations of one function, each measured within 1e-6 of float64 here; 1e-5 leaves
# room for other summation orders, while a difference in what is computed is far above it
F32_TOL = 1e-5


@pytest.fixture
def solo():
    """solo-learn's loss modules: ``.losses`` (``solo.losses.swav``), ``.knopp``
    (``solo.utils.sinkhorn_knopp``)."""
    modules = upstream("solo-learn")
    return types.SimpleNamespace(losses=modules["solo.losses.swav"], knopp=modules["solo.utils.sinkhorn_knopp"])


def assignments_of(sk, preds, queue_preds=None):
    """solo/methods/swav.py get_assignments: the queue's scores after the batch, batch rows kept."""
    out = []
    for i, p in enumerate(preds):
        if queue_preds is not None:
            p = torch.cat((p, queue_preds[i]))
        out.append(sk(p.detach())[: preds[0].shape[0]])
    return out


def views(n_views=2, batch=5, prototypes=7, queue=0, seed=0):
    p = make_problem(n_crops=n_views, batch=batch, prototypes=prototypes, dim=4, queue=queue,
                     crops_for_assign=tuple(range(n_views)), seed=seed, dtype=torch.float64)
    preds = [s.float() for s in p.scores.split(batch)]
    return preds, None if p.queue is None else [q.float() for q in p.queue_scores]


def run(sk_class, loss_func, preds, queue_preds, iterations, dtype=None):
    dtype = dtype or preds[0].dtype
    preds = [p.to(dtype).clone().requires_grad_() for p in preds]
    queue_preds = None if queue_preds is None else [q.to(dtype) for q in queue_preds]
    assignments = assignments_of(sk_class(iterations, 0.1), preds, queue_preds)
    loss = loss_func(preds, assignments, 0.2)
    loss.backward()
    return loss, assignments, [p.grad for p in preds]


CASES = [(2, 5, 7, 0), (2, 5, 7, 6), (3, 4, 6, 2), (2, 1, 7, 0), (2, 4, 1, 3)]  # views, B, K, queue


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("case", CASES)
def test_loss_codes_and_gradients_equal_solo_learn(solo, case, iterations):
    n_views, batch, prototypes, queue = case
    preds, queue_preds = views(n_views, batch, prototypes, queue)
    loss, codes, grads = run(adapter.SinkhornKnopp, adapter.swav_loss_func, preds, queue_preds, iterations)
    assert loss.shape == () and loss.dtype == torch.float32
    for dtype, value_tol, grad_tol in ((torch.float32, F32_TOL, F32_TOL), (torch.float64, VALUE_TOL, GRAD_TOL)):
        expected, expected_codes, expected_grads = run(
            solo.knopp.SinkhornKnopp, solo.losses.swav_loss_func, preds, queue_preds, iterations, dtype)
        assert expected.dtype == dtype
        assert rel_err(loss, expected) <= value_tol
        for ours, theirs in zip(codes, expected_codes):
            assert ours.dtype == torch.float32 and rel_err(ours, theirs) <= value_tol
        for ours, theirs in zip(grads, expected_grads):
            assert rel_err(ours, theirs) <= grad_tol


def test_loss_with_given_assignments_and_dtypes(solo):
    preds, _ = views(n_views=3)
    assignments = [torch.softmax(torch.randn(5, 7), dim=1) for _ in range(4)]  # extra entries are ignored
    loss = adapter.swav_loss_func(preds, assignments)
    assert rel_err(loss, solo.losses.swav_loss_func(preds, assignments)) <= F32_TOL
    half = adapter.swav_loss_func([p.half() for p in preds], [a.half() for a in assignments])
    assert half.dtype == solo.losses.swav_loss_func([p.half() for p in preds], [a.half() for a in assignments]).dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = [p.bfloat16() for p in preds]
        assert adapter.swav_loss_func(bf16, assignments).dtype == solo.losses.swav_loss_func(bf16, assignments).dtype
    with pytest.raises(ValueError, match="at least 2 views"):
        adapter.swav_loss_func(preds[:1], assignments)
    with pytest.raises(ValueError, match="assignments"):
        adapter.swav_loss_func(preds, [])


def test_sinkhorn_knopp_keeps_the_input_dtype_and_does_not_overflow(solo):
    preds, _ = views()
    scores = preds[0] * 10  # exp(10/0.05) overflows float32 in solo-learn's code
    assert torch.isnan(solo.knopp.SinkhornKnopp()(scores)).any()
    codes = adapter.SinkhornKnopp()(scores)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    assert rel_err(codes, solo.knopp.SinkhornKnopp()(scores.double())) <= VALUE_TOL  # e^200 fits in float64
    assert adapter.SinkhornKnopp()(preds[0].half()).dtype == torch.float16


# ---- multi-crop: codes of the large crops only (solo-learn >= 1.0.4) --------------------------
def multicrop_loss_func(preds, assignments, temperature=0.1):
    """solo/losses/swav.py swav_loss_func as of solo-learn 1.0.4 (June 2022) and unchanged to
    vturrisi/solo-learn@9187ea39c2c3f43c455ab06664d2b019a9802954, verbatim: the loop runs over the
    assignments, which solo/methods/swav.py computes for preds[:num_large_crops] only. (The
    package index holds solo-learn 1.0.2, whose loop runs over preds and needs one
    assignment per view.)"""
    losses = []
    for v1, a in enumerate(assignments):
        for v2 in np.delete(np.arange(len(preds)), v1):
            p = preds[v2] / temperature
            loss = -torch.mean(torch.sum(a * torch.log_softmax(p, dim=1), dim=1))
            losses.append(loss)
    return sum(losses) / len(losses)


def multicrop_inputs(n_views=8, n_assign=2, batch=4, prototypes=10, seed=5):
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(batch, prototypes, generator=g) for _ in range(n_views)]
    assignments = [torch.softmax(torch.randn(batch, prototypes, generator=g), dim=1) for _ in range(n_assign)]
    return preds, assignments


def evaluate_grads(loss_func, preds, assignments):
    preds = [p.clone().requires_grad_() for p in preds]
    loss = loss_func(preds, assignments, 0.1)
    loss.backward()  # a view that is only an assign view gets no gradient: None in solo-learn, zeros here
    return loss, [torch.zeros_like(p) if p.grad is None else p.grad for p in preds]


@pytest.mark.parametrize("n_views, n_assign", [(8, 2), (3, 1), (4, 3), (3, 3)])
def test_multicrop_assignments_of_the_large_crops_only(n_views, n_assign):
    preds, assignments = multicrop_inputs(n_views, n_assign)
    loss, grads = evaluate_grads(adapter.swav_loss_func, preds, assignments)
    assert loss.shape == () and loss.dtype == torch.float32
    for dtype, value_tol, grad_tol in ((torch.float32, F32_TOL, F32_TOL), (torch.float64, VALUE_TOL, GRAD_TOL)):
        expected, expected_grads = evaluate_grads(multicrop_loss_func, [p.to(dtype) for p in preds],
                                                  [a.to(dtype) for a in assignments])
        assert rel_err(loss, expected) <= value_tol
        for grad, expected_grad in zip(grads, expected_grads):
            assert rel_err(grad, expected_grad) <= grad_tol
    core = swapped_prediction_loss(preds, torch.stack(assignments), range(n_assign), 0.1,
                                   check_finite_inputs=False)
    assert rel_err(loss, core) <= 1e-6


def test_multicrop_equals_solo_learn_1_0_2_with_one_assignment_per_view(solo):
    preds, assignments = multicrop_inputs(n_views=4, n_assign=4)
    assert rel_err(multicrop_loss_func(preds, assignments), solo.losses.swav_loss_func(preds, assignments)) <= 1e-6


# ---- patch / unpatch: solo-learn's modules, and a module that imports them by name ----------
def install_solo(monkeypatch, solo):
    """solo-learn's two loss modules in sys.modules, with stand-ins for solo.losses (which
    re-exports swav_loss_func) and solo.methods.swav (which imports both by name; the real
    ones import pytorch_lightning)."""
    modules = {"solo.losses.swav": solo.losses, "solo.utils.sinkhorn_knopp": solo.knopp,
               "solo.losses": types.ModuleType("solo.losses"), "solo.methods.swav": types.ModuleType("solo.methods.swav")}
    modules["solo.losses"].swav_loss_func = solo.losses.swav_loss_func
    modules["solo.methods.swav"].swav_loss_func = solo.losses.swav_loss_func
    modules["solo.methods.swav"].SinkhornKnopp = solo.knopp.SinkhornKnopp
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules


def test_patch_and_unpatch(solo, monkeypatch):
    modules = install_solo(monkeypatch, solo)
    original_loss, original_forward = solo.losses.swav_loss_func, solo.knopp.SinkhornKnopp.forward
    method = modules["solo.methods.swav"]
    made_before = method.SinkhornKnopp(3, 0.05)
    scores = views()[0][0] * 10
    assert torch.isnan(made_before(scores)).any()
    try:
        assert adapter.patch() is True
        for name in ("solo.losses.swav", "solo.losses", "solo.methods.swav"):
            assert modules[name].swav_loss_func is adapter.swav_loss_func
        assert torch.equal(made_before(scores), adapter.SinkhornKnopp(3, 0.05)(scores))
    finally:
        assert adapter.unpatch() is True
    for name in ("solo.losses.swav", "solo.losses", "solo.methods.swav"):
        assert modules[name].swav_loss_func is original_loss
    assert method.SinkhornKnopp.forward is original_forward
    assert torch.isnan(made_before(scores)).any()


def test_multicrop_through_patch(solo, monkeypatch):
    modules = install_solo(monkeypatch, solo)
    preds, assignments = multicrop_inputs()  # 2 + 6 views, codes of the 2 large crops
    try:
        adapter.patch()
        loss = modules["solo.methods.swav"].swav_loss_func(preds, assignments, 0.1)
    finally:
        adapter.unpatch()
    assert rel_err(loss, multicrop_loss_func([p.double() for p in preds], [a.double() for a in assignments])) <= 1e-5


# ---- non-finite inputs: a non-finite result, as in solo-learn; check_finite_inputs=True raises -
def poisoned(where, index, value, n_assign=4):
    preds, assignments = multicrop_inputs(n_views=4, n_assign=n_assign)
    {"preds": preds, "assignments": assignments}[where][index][1, 2] = value
    return preds, assignments


CASES_NONFINITE = [("preds", 0), ("preds", 3), ("assignments", 1)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where, index", CASES_NONFINITE)
def test_nonfinite_inputs_give_a_nonfinite_loss_or_raise_when_checked(where, index, value):
    for n_assign in (2, 4):  # the multi-crop call and one assignment per view
        preds, assignments = poisoned(where, index, value, n_assign)
        assert not torch.isfinite(adapter.swav_loss_func(preds, assignments))
        with pytest.raises(ValueError, match=re.escape(f"{where}[{index}] contains NaN or infinite")):
            adapter.swav_loss_func(preds, assignments, check_finite_inputs=True)
    scores = preds[0].clone()
    scores[0, 0] = value
    assert not torch.isfinite(adapter.SinkhornKnopp()(scores)).all()
    with pytest.raises(ValueError, match="Q contains NaN or infinite"):
        adapter.SinkhornKnopp(check_finite_inputs=True)(scores)


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where, index", CASES_NONFINITE)
def test_nonfinite_inputs_like_solo_learn(solo, where, index, value, iterations):
    """The same NaN / ±inf / finite result as solo-learn's (-inf scores are zero weights in
    the Sinkhorn: finite codes in both)."""
    preds, assignments = poisoned(where, index, value)  # one assignment per view, as 1.0.2 needs
    assert_like_upstream(adapter.swav_loss_func(preds, assignments),
                         solo.losses.swav_loss_func(preds, assignments), F32_TOL)
    scores = preds[index].clone()
    scores[0, 0] = value
    assert_like_upstream(adapter.SinkhornKnopp(iterations)(scores), solo.knopp.SinkhornKnopp(iterations)(scores),
                         F32_TOL)


# ---- two gloo ranks equal one process on the concatenated batch -----------------------------
WORLD, BATCH, QUEUE = 2, 3, 2


def full_views():
    return views(n_views=3, batch=BATCH * WORLD, prototypes=6, queue=QUEUE * WORLD, seed=4)


def rank_run(rank, world_size):
    preds, queue_preds = full_views()
    mine = lambda ts, n: [t[rank * n:(rank + 1) * n] for t in ts]  # noqa: E731
    results = {}
    for iterations in (0, 3):
        for use_queue in (False, True):
            queue = mine(queue_preds, QUEUE) if use_queue else None
            loss, codes, grads = run(lambda i, e: adapter.SinkhornKnopp(i, e, world_size), adapter.swav_loss_func,
                                     mine(preds, BATCH), queue, iterations)
            results[iterations, use_queue] = (loss.detach(), codes, grads)
    return results


def test_two_ranks_equal_one_process():
    ranks = run_in_processes(rank_run, WORLD)
    preds, queue_preds = full_views()
    for (iterations, use_queue) in ranks[0]:
        loss, codes, grads = run(adapter.SinkhornKnopp, adapter.swav_loss_func, preds,
                                 queue_preds if use_queue else None, iterations)
        per_rank = [r[iterations, use_queue] for r in ranks]
        assert rel_err(sum(r[0] for r in per_rank) / WORLD, loss) <= 1e-6
        for view in range(len(preds)):
            assert rel_err(torch.cat([r[1][view] for r in per_rank]), codes[view]) <= 1e-5
            assert rel_err(torch.cat([r[2][view] for r in per_rank]) / WORLD, grads[view]) <= 1e-5
