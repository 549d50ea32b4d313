"""swav_kernels.compat.vissl against VISSL's own ``vissl/losses/swav_loss.py`` (``SwAVLoss``,
``SwAVCriterion``) and ``vissl/losses/distibuted_sinkhornknopp.py`` (vissl 0.1.6,
``pip install --no-deps vissl``; loaded by ``compat_upstream`` with classy_vision's loss
registry and iopath stubbed: skipped without it, a failure in CI), one process (VISSL's
all_reduce calls are identities there).

Tolerances (``rel_err``: max abs error / max abs expected): against VISSL run in float64
(float64 scores and queues; VISSL rounds its codes to float32, ~6e-8), DESIGN §4's contract
(1e-5 for the loss, 1e-4 for gradients); against VISSL run in float32 on the same inputs,
1e-5 for both (``F32_TOL``: both sides are float32 evaluations of one function, each within
1e-6 of float64 here, measured). Queues hold copied embeddings: 1e-6.
"""
import sys

import pytest
import torch
from torch import nn

from compat_upstream import upstream
from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels.compat import vissl as adapter

# against the upstream in float64: DESIGN §4's contract (loss and codes; gradients)
VALUE_TOL, GRAD_TOL = 1e-5, 1e-4
# against the upstream in float32 on the same inputs (loss, codes and gradients): both are
# float32 evaluations of one function, each measured within 1e-6 of float64 here; 1e-5 leaves
# room for other summation orders, while a difference in what is computed is far above it
F32_TOL = 1e-5


@pytest.fixture
def vissl():
    """VISSL's ``vissl.losses.swav_loss`` module."""
    return upstream("vissl")["vissl.losses.swav_loss"]


def vissl_loss_class(vissl):
    """VISSL's SwAVLoss from a plain config dict (VISSL passes its AttrDict)."""
    return lambda cfg: vissl.SwAVLoss(vissl.AttrDict(cfg))


# ---- a few training steps with a two-head model -------------------------------------------------
class Heads(nn.Module):
    """VISSL's SwAVPrototypesHead as the queue hook sees it: nmb_heads and prototypes{i}."""

    def __init__(self, dim, prototypes, dtype):
        super().__init__()
        self.nmb_heads = len(prototypes)
        for i, k in enumerate(prototypes):
            weight = make_problem(prototypes=k, dim=dim, seed=20 + i, dtype=torch.float64).prototypes
            layer = nn.Linear(dim, k, bias=False).to(dtype)
            layer.weight.data.copy_(weight)
            setattr(self, "prototypes" + str(i), layer)


def config(num_crops=4, crops_for_assign=(0, 1), num_iters=3, use_double_precision=False, num_prototypes=(7, 5),
           queue_length=0, start_iter=1, hard_iters=0, dim=4):
    return {"temperature": 0.2, "crops_for_assign": list(crops_for_assign), "num_crops": num_crops,
            "num_iters": num_iters, "epsilon": 0.1, "use_double_precision": use_double_precision,
            "num_prototypes": list(num_prototypes), "embedding_dim": dim, "temp_hard_assignment_iters": hard_iters,
            "output_dir": "", "queue": {"local_queue_length": queue_length, "start_iter": start_iter}}


def set_initial_queues(criterion, rank, world):
    """Replace the random initial queues by rank ``rank``'s rows of queues common to all ranks."""
    generator = torch.Generator().manual_seed(7)
    for name, buffer in list(criterion.named_buffers()):
        if name.startswith("local_"):
            n_assign, length, width = buffer.shape
            full = torch.rand(n_assign, length * world, width, generator=generator, dtype=torch.float64) * 2 - 1
            buffer.copy_(full[:, rank * length:(rank + 1) * length])


def run_steps(loss_class, cfg, dtype, steps=3, batch=3, rank=0, world=1, common_queues=False):
    """Per step: loss, gradients of each head's scores, embedding queue. Rows of ``rank``."""
    torch.manual_seed(0)  # the queues' random initial values
    loss_fn = loss_class(cfg).to(dtype)
    if common_queues:
        set_initial_queues(loss_fn.swav_criterion, rank, world)
    heads = Heads(cfg["embedding_dim"], cfg["num_prototypes"], dtype)
    history = []
    for step in range(steps):
        n_crops = cfg["num_crops"]
        z = make_problem(n_crops=n_crops, batch=batch * world, dim=cfg["embedding_dim"], seed=30 + step,
                         dtype=torch.float64).embeddings
        z = z.view(n_crops, world, batch, -1)[:, rank].reshape(n_crops * batch, -1).to(dtype)
        if loss_fn.swav_criterion.use_queue:  # VISSL's SwAVUpdateQueueScoresHook
            loss_fn.swav_criterion.compute_queue_scores(heads)
        with torch.no_grad():
            scores = [getattr(heads, "prototypes" + str(i))(z).requires_grad_() for i in range(heads.nmb_heads)]
        loss = loss_fn([z] + scores, None)
        loss.backward()
        queue = getattr(loss_fn.swav_criterion, "local_emb_queue", None)
        history.append((loss.detach(), [s.grad for s in scores], None if queue is None else queue.clone()))
    return history


CASES = [  # (batch, config)
    (3, dict()),
    (3, dict(queue_length=6)),
    (2, dict(queue_length=2, use_double_precision=True)),
    (3, dict(hard_iters=2, queue_length=3)),
    (3, dict(num_crops=3, crops_for_assign=(1,), num_prototypes=(6,))),
    (2, dict(num_prototypes=(1, 4), queue_length=2)),  # K = 1 on a head
    (1, dict(queue_length=2)),  # batch 1
]


@pytest.mark.parametrize("num_iters", [0, 3])
@pytest.mark.parametrize("batch, case", CASES)
def test_training_steps_equal_vissl(vissl, batch, case, num_iters):
    cfg = config(num_iters=num_iters, **case)
    got = run_steps(adapter.SwAVLoss, cfg, torch.float32, batch=batch)
    for dtype, value_tol, grad_tol in ((torch.float32, F32_TOL, F32_TOL), (torch.float64, VALUE_TOL, GRAD_TOL)):
        expected = run_steps(vissl_loss_class(vissl), cfg, dtype, batch=batch)
        for (loss, grads, queue), (e_loss, e_grads, e_queue) in zip(got, expected):
            assert loss.shape == () and loss.dtype == torch.float32
            assert rel_err(loss, e_loss) <= value_tol
            for grad, e_grad in zip(grads, e_grads):
                assert rel_err(grad, e_grad) <= grad_tol
            if queue is not None:
                assert rel_err(queue, e_queue) <= 1e-6


def test_buffers_have_vissls_names_and_initial_values(vissl):
    cfg = config(queue_length=4)
    torch.manual_seed(1)
    ours = adapter.SwAVLoss.from_config(cfg).state_dict()
    torch.manual_seed(1)
    theirs = vissl.SwAVLoss.from_config(vissl.AttrDict(cfg)).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_hard_assignment_codes_are_one_hot_then_soft(vissl):
    cfg = config(hard_iters=1, num_prototypes=(7,))
    loss_fn = adapter.SwAVLoss(cfg)
    scores = make_problem(batch=3, prototypes=7).scores
    hard = loss_fn([None, scores], None)
    soft = loss_fn([None, scores], None)
    theirs = vissl.SwAVLoss(vissl.AttrDict(cfg))
    assert rel_err(hard, theirs([None, scores], None)) <= F32_TOL
    assert rel_err(soft, theirs([None, scores], None)) <= F32_TOL
    assert hard.item() != pytest.approx(soft.item(), rel=1e-3)


def test_unsupported_config_is_named():
    with pytest.raises(ValueError, match="shk_powerlaw"):
        adapter.SwAVLoss(dict(config(), shk_powerlaw=0.5))
    with pytest.raises(ValueError, match="'epsilon'"):
        adapter.SwAVLoss({k: v for k, v in config().items() if k != "epsilon"})


def test_patch_and_unpatch(vissl, monkeypatch):
    monkeypatch.setitem(sys.modules, "vissl.losses.swav_loss", vissl)
    original_forward = vissl.SwAVCriterion.forward
    args = (0.2, [0, 1], 4, 3, 0.1, False, [7], 0, 4, 0, "")
    made_before = vissl.SwAVCriterion(*args)
    scores = make_problem(batch=3, prototypes=7).scores
    expected = adapter.SwAVCriterion(*args)(scores, 0)
    original = made_before(scores, 0)
    assert rel_err(original, expected) <= F32_TOL
    try:
        assert adapter.patch() is True
        assert torch.equal(made_before(scores, 0), expected)
        made_before.shk_powerlaw = 0.5  # configurations swav_kernels does not cover keep VISSL's code
        assert torch.equal(made_before(scores, 0), original)
    finally:
        assert adapter.unpatch() is True
    assert vissl.SwAVCriterion.forward is original_forward


# ---- non-finite inputs: a non-finite loss; check_finite_inputs=True raises --------------------
# (VISSL's own code is not compared here: on a NaN loss it dumps the scores through iopath,
# which the test loader stubs)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["scores", "queue"])
def test_nonfinite_inputs_give_a_nonfinite_loss_or_raise_when_checked(where, value):
    cfg = config(num_prototypes=(7,), queue_length=3, start_iter=0)
    problem = make_problem(n_crops=4, batch=3, prototypes=7, dim=4)
    embeddings, scores = problem.embeddings, problem.scores
    for check in (False, True):
        torch.manual_seed(0)
        loss_fn = adapter.SwAVLoss(cfg, check_finite_inputs=check)
        if where == "scores":
            scores[4, 2] = value
        else:
            loss_fn.swav_criterion.local_queue0[1, 0, 3] = value
        if check:
            with pytest.raises(ValueError, match="scores of head 0" if where == "scores" else "local_queue0"):
                loss_fn([embeddings, scores], None)
        else:
            assert not torch.isfinite(loss_fn([embeddings, scores], None))


# ---- two gloo ranks equal one process on the concatenated batch -----------------------------
WORLD = 2
# queue length = per-rank batch: after one step each rank's queue is its own batch, so the ranks'
# queues together always hold the rows of the one-process queue
DIST_CASES = [dict(queue_length=2, start_iter=0), dict(queue_length=2, start_iter=0, use_double_precision=True, hard_iters=1)]


def rank_run(rank, world_size):
    return {(i, n): run_steps(adapter.SwAVLoss, config(num_iters=n, **case), torch.float32, batch=2,
                              rank=rank, world=world_size, common_queues=True)
            for i, case in enumerate(DIST_CASES) for n in (0, 3)}


def test_two_ranks_equal_one_process():
    ranks = run_in_processes(rank_run, WORLD)
    for (i, num_iters), _ in ranks[0].items():
        case = dict(DIST_CASES[i], queue_length=DIST_CASES[i]["queue_length"] * WORLD)
        cfg = config(num_iters=num_iters, **case)
        single = run_steps(adapter.SwAVLoss, cfg, torch.float32, batch=2 * WORLD, common_queues=True)
        for step, (loss, grads, _) in enumerate(single):
            per_rank = [r[i, num_iters][step] for r in ranks]
            assert rel_err(sum(r[0] for r in per_rank) / WORLD, loss) <= 1e-6
            for head, grad in enumerate(grads):
                rank_grads = torch.stack([r[1][head].view(4, 2, -1) for r in per_rank], dim=1)
                assert rel_err(rank_grads.reshape(grad.shape) / WORLD, grad) <= 1e-5
