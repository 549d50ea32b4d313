"""swav_kernels.compat.solo_learn against a float64 transcription of solo-learn's
solo/losses/swav.py (swav_loss_func) and solo/utils/sinkhorn_knopp.py (SinkhornKnopp),
and of how solo/methods/swav.py combines them (get_assignments with the queue)."""
import sys
import types

import numpy as np
import pytest
import torch

from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels import swapped_prediction_loss
from swav_kernels.compat import solo_learn as adapter


# ---- transcription (single process) ---------------------------------------------------------
def transcribed_loss_func(preds, assignments, temperature=0.1):
    losses = []
    for v1 in range(len(preds)):
        for v2 in np.delete(np.arange(len(preds)), v1):
            a = assignments[v1]
            p = preds[v2] / temperature
            losses.append(-torch.mean(torch.sum(a * torch.log_softmax(p, dim=1), dim=1)))
    return sum(losses) / len(losses)


class TranscribedSinkhornKnopp(torch.nn.Module):
    def __init__(self, num_iters=3, epsilon=0.05, world_size=1):
        super().__init__()
        self.num_iters, self.epsilon, self.world_size = num_iters, epsilon, world_size

    @torch.no_grad()
    def forward(self, Q):
        Q = torch.exp(Q / self.epsilon).t()
        B = Q.shape[1] * self.world_size
        K = Q.shape[0]
        Q /= torch.sum(Q)
        for _ in range(self.num_iters):
            Q /= torch.sum(Q, dim=1, keepdim=True)
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()


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
def test_loss_codes_and_gradients_equal_the_transcription(case, iterations):
    n_views, batch, prototypes, queue = case
    preds, queue_preds = views(n_views, batch, prototypes, queue)
    loss, codes, grads = run(adapter.SinkhornKnopp, adapter.swav_loss_func, preds, queue_preds, iterations)
    expected, expected_codes, expected_grads = run(
        TranscribedSinkhornKnopp, transcribed_loss_func, preds, queue_preds, iterations, torch.float64)
    assert loss.shape == () and loss.dtype == torch.float32
    assert rel_err(loss, expected) <= 1e-5
    for ours, theirs in zip(codes, expected_codes):
        assert ours.dtype == torch.float32 and rel_err(ours, theirs) <= 1e-5
    for ours, theirs in zip(grads, expected_grads):
        assert rel_err(ours, theirs) <= 1e-4


def test_loss_with_given_assignments_and_dtypes():
    preds, _ = views(n_views=3)
    assignments = [torch.softmax(torch.randn(5, 7), dim=1) for _ in range(4)]  # extra entries are ignored
    loss = adapter.swav_loss_func(preds, assignments)
    assert rel_err(loss, transcribed_loss_func(preds, assignments[:3])) <= 1e-6
    half = adapter.swav_loss_func([p.half() for p in preds], [a.half() for a in assignments])
    assert half.dtype == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert adapter.swav_loss_func([p.bfloat16() for p in preds], assignments).dtype == torch.float32
    with pytest.raises(ValueError, match="at least 2 views"):
        adapter.swav_loss_func(preds[:1], assignments)
    with pytest.raises(ValueError, match="assignments"):
        adapter.swav_loss_func(preds, [])


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


@pytest.mark.parametrize("n_views, n_assign", [(8, 2), (3, 1), (4, 3)])
def test_multicrop_assignments_of_the_large_crops_only(n_views, n_assign):
    preds, assignments = multicrop_inputs(n_views, n_assign)
    loss, grads = evaluate_grads(adapter.swav_loss_func, preds, assignments)
    expected, expected_grads = evaluate_grads(multicrop_loss_func, [p.double() for p in preds],
                                              [a.double() for a in assignments])
    assert loss.shape == () and loss.dtype == torch.float32
    assert rel_err(loss, expected) <= 1e-5
    for grad, expected_grad in zip(grads, expected_grads):
        assert rel_err(grad, expected_grad) <= 1e-4
    core = swapped_prediction_loss(preds, torch.stack(assignments), range(n_assign), 0.1,
                                   check_finite_inputs=False)
    assert rel_err(loss, core) <= 1e-6


def test_multicrop_through_patch(monkeypatch):
    modules = install_fake_solo(monkeypatch)
    preds, assignments = multicrop_inputs()  # 2 + 6 views, codes of the 2 large crops
    try:
        adapter.patch()
        loss = modules["solo.methods.swav"].swav_loss_func(preds, assignments, 0.1)
    finally:
        adapter.unpatch()
    assert rel_err(loss, multicrop_loss_func([p.double() for p in preds], [a.double() for a in assignments])) <= 1e-5


def evaluate_grads(loss_func, preds, assignments):
    preds = [p.clone().requires_grad_() for p in preds]
    loss = loss_func(preds, assignments, 0.1)
    loss.backward()  # a view that is only an assign view gets no gradient: None in solo-learn, zeros here
    return loss, [torch.zeros_like(p) if p.grad is None else p.grad for p in preds]


def test_sinkhorn_knopp_keeps_the_input_dtype_and_does_not_overflow():
    preds, _ = views()
    scores = preds[0] * 10  # exp(10/0.05) overflows float32 in solo-learn's code
    codes = adapter.SinkhornKnopp()(scores)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    assert rel_err(codes, TranscribedSinkhornKnopp()(scores.double())) <= 1e-5
    assert adapter.SinkhornKnopp()(preds[0].half()).dtype == torch.float16


# ---- patch / unpatch on stand-ins for solo-learn's modules ----------------------------------
def install_fake_solo(monkeypatch):
    """solo.losses.swav, solo.utils.sinkhorn_knopp and solo.methods.swav (which imports both by
    name), holding the transcriptions; solo-learn itself is not installable here."""
    names = ["solo", "solo.losses", "solo.losses.swav", "solo.utils", "solo.utils.sinkhorn_knopp",
             "solo.methods", "solo.methods.swav"]
    modules = {name: types.ModuleType(name) for name in names}
    modules["solo.losses.swav"].swav_loss_func = transcribed_loss_func
    modules["solo.losses"].swav_loss_func = transcribed_loss_func

    class SinkhornKnopp(TranscribedSinkhornKnopp):
        pass

    SinkhornKnopp.forward = TranscribedSinkhornKnopp.forward
    modules["solo.utils.sinkhorn_knopp"].SinkhornKnopp = SinkhornKnopp
    modules["solo.methods.swav"].swav_loss_func = transcribed_loss_func
    modules["solo.methods.swav"].SinkhornKnopp = SinkhornKnopp
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules


def test_patch_and_unpatch(monkeypatch):
    modules = install_fake_solo(monkeypatch)
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
        assert modules[name].swav_loss_func is transcribed_loss_func
    assert method.SinkhornKnopp.forward is TranscribedSinkhornKnopp.forward
    assert torch.isnan(made_before(scores)).any()


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
