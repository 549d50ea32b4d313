"""swav_kernels.compat.vissl against a float64 transcription of VISSL's
vissl/losses/swav_loss.py (SwAVLoss, SwAVCriterion) and
vissl/losses/distibuted_sinkhornknopp.py, one process (all_reduce calls are identities)."""
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels.compat import vissl as adapter


# ---- transcription ------------------------------------------------------------------------
def transcribed_sinkhornknopp(Q, num_iter, hard_assignment, use_double_prec):
    Q = Q.clone()
    Q /= torch.sum(Q, dtype=Q.dtype)
    k, n = Q.shape
    r = torch.ones(k, dtype=Q.dtype) / k
    c = torch.ones(n, dtype=Q.dtype) / n
    for _ in range(num_iter):
        u = torch.sum(Q, dim=1, dtype=Q.dtype)
        if len(torch.nonzero(u == 0)) > 0:
            Q += 1e-12
            u = torch.sum(Q, dim=1, dtype=Q.dtype)
        Q *= (r / u).unsqueeze(1)
        Q *= (c / torch.sum(Q, dim=0, dtype=Q.dtype)).unsqueeze(0)
    Q = (Q / torch.sum(Q, dim=0, keepdim=True, dtype=Q.dtype)).t()  # VISSL adds .float(); the oracle stays float64
    if hard_assignment:
        index_max = torch.max(Q, dim=1)[1]
        Q.zero_()
        Q.scatter_(1, index_max.unsqueeze(1), 1)
    return Q


class TranscribedCriterion(nn.Module):
    def __init__(self, temperature, crops_for_assign, num_crops, num_iters, epsilon, use_double_prec,
                 num_prototypes, local_queue_length, embedding_dim, temp_hard_assignment_iters):
        super().__init__()
        self.temperature, self.crops_for_assign, self.num_crops = temperature, crops_for_assign, num_crops
        self.nmb_sinkhornknopp_iters, self.epsilon, self.use_double_prec = num_iters, epsilon, use_double_prec
        self.num_prototypes, self.nmb_heads = num_prototypes, len(num_prototypes)
        self.embedding_dim, self.local_queue_length = embedding_dim, local_queue_length
        self.temp_hard_assignment_iters = temp_hard_assignment_iters
        self.register_buffer("num_iteration", torch.zeros(1, dtype=int))
        self.use_queue = False
        if local_queue_length > 0:
            for i in range(self.nmb_heads):
                init = torch.rand(len(crops_for_assign), local_queue_length, num_prototypes[i]) * 2 - 1
                self.register_buffer("local_queue" + str(i), init)
            stdv = 1.0 / math.sqrt(embedding_dim / 3)
            init = torch.rand(len(crops_for_assign), local_queue_length, embedding_dim).mul_(2 * stdv).add_(-stdv)
            self.register_buffer("local_emb_queue", init)

    def forward(self, scores, head_id):
        bs = scores.shape[0] // self.num_crops
        total_loss, n_term_loss = 0, 0
        for i, crop_id in enumerate(self.crops_for_assign):
            with torch.no_grad():
                scores_this_crop = scores[bs * crop_id: bs * (crop_id + 1)]
                if self.use_queue:
                    queue = getattr(self, "local_queue" + str(head_id))[i].clone()
                    scores_this_crop = torch.cat((scores_this_crop, queue))
                if self.use_double_prec:
                    assignments = torch.exp(scores_this_crop.double() / np.float64(self.epsilon)).t()
                else:
                    assignments = scores_this_crop / self.epsilon
                    assignments -= torch.max(assignments)
                    assignments = torch.exp(assignments).t()
                assignments = transcribed_sinkhornknopp(
                    assignments, self.nmb_sinkhornknopp_iters,
                    bool(self.num_iteration < self.temp_hard_assignment_iters), self.use_double_prec)[:bs]
            loss = 0
            idx_crop_pred = np.delete(np.arange(self.num_crops), crop_id)
            for p in idx_crop_pred:
                x = scores[bs * p: bs * (p + 1)]
                x = x.double() / np.float64(self.temperature) if self.use_double_prec else x / self.temperature
                loss -= torch.mean(torch.sum(assignments * torch.log_softmax(x, dim=1), dim=1, dtype=assignments.dtype))
            total_loss += loss / len(idx_crop_pred)
            n_term_loss += 1
        return total_loss / n_term_loss

    def update_emb_queue(self, emb):
        with torch.no_grad():
            bs = len(emb) // self.num_crops
            for i, crop_id in enumerate(self.crops_for_assign):
                queue = self.local_emb_queue[i]
                queue[bs:] = queue[:-bs].clone()
                queue[:bs] = emb[crop_id * bs: (crop_id + 1) * bs]

    def compute_queue_scores(self, head):
        with torch.no_grad():
            for crop_id in range(len(self.crops_for_assign)):
                for i in range(head.nmb_heads):
                    getattr(self, "local_queue" + str(i))[crop_id] = getattr(head, "prototypes" + str(i))(
                        self.local_emb_queue[crop_id])


class TranscribedLoss(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.queue_start_iter = config["queue"]["start_iter"]
        self.swav_criterion = TranscribedCriterion(
            config["temperature"], config["crops_for_assign"], config["num_crops"], config["num_iters"],
            config["epsilon"], config["use_double_precision"], config["num_prototypes"],
            config["queue"]["local_queue_length"], config["embedding_dim"], config["temp_hard_assignment_iters"])

    def forward(self, output, target):
        self.swav_criterion.use_queue = (self.swav_criterion.local_queue_length > 0
                                         and self.swav_criterion.num_iteration >= self.queue_start_iter)
        loss = 0
        for i, prototypes_scores in enumerate(output[1:]):
            loss += self.swav_criterion(prototypes_scores, i)
        loss /= len(output) - 1
        self.swav_criterion.num_iteration += 1
        if self.swav_criterion.use_queue:
            self.swav_criterion.update_emb_queue(output[0].detach())
        return loss


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
def test_training_steps_equal_the_transcription(batch, case, num_iters):
    cfg = config(num_iters=num_iters, **case)
    got = run_steps(adapter.SwAVLoss, cfg, torch.float32, batch=batch)
    expected = run_steps(TranscribedLoss, cfg, torch.float64, batch=batch)
    for (loss, grads, queue), (e_loss, e_grads, e_queue) in zip(got, expected):
        assert loss.shape == () and loss.dtype == torch.float32
        assert rel_err(loss, e_loss) <= 1e-5
        for grad, e_grad in zip(grads, e_grads):
            assert rel_err(grad, e_grad) <= 1e-4
        if queue is not None:
            assert rel_err(queue, e_queue) <= 1e-6


def test_buffers_have_vissls_names_and_initial_values():
    cfg = config(queue_length=4)
    torch.manual_seed(1)
    ours = adapter.SwAVLoss.from_config(cfg).state_dict()
    torch.manual_seed(1)
    theirs = TranscribedLoss(cfg).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_hard_assignment_codes_are_one_hot_then_soft():
    cfg = config(hard_iters=1, num_prototypes=(7,))
    loss_fn = adapter.SwAVLoss(cfg)
    scores = make_problem(batch=3, prototypes=7).scores
    hard = loss_fn([None, scores], None)
    soft = loss_fn([None, scores], None)
    transcribed = TranscribedLoss(cfg)
    assert rel_err(hard, transcribed([None, scores.double()], None)) <= 1e-5
    assert rel_err(soft, transcribed([None, scores.double()], None)) <= 1e-5
    assert hard.item() != pytest.approx(soft.item(), rel=1e-3)


def test_unsupported_config_is_named():
    with pytest.raises(ValueError, match="shk_powerlaw"):
        adapter.SwAVLoss(dict(config(), shk_powerlaw=0.5))
    with pytest.raises(ValueError, match="'epsilon'"):
        adapter.SwAVLoss({k: v for k, v in config().items() if k != "epsilon"})


def test_patch_and_unpatch(monkeypatch):
    names = ["vissl", "vissl.losses", "vissl.losses.swav_loss"]
    modules = {name: types.ModuleType(name) for name in names}

    class SwAVCriterion(TranscribedCriterion):  # stand-in: VISSL itself does not install here
        pass

    SwAVCriterion.forward = TranscribedCriterion.forward
    modules["vissl.losses.swav_loss"].SwAVCriterion = SwAVCriterion
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    args = (0.2, [0, 1], 4, 3, 0.1, False, [7], 0, 4, 0)
    made_before = SwAVCriterion(*args)
    scores = make_problem(batch=3, prototypes=7).scores
    expected = adapter.SwAVCriterion(*args, "")(scores, 0)
    original = TranscribedCriterion.forward(made_before, scores, 0)
    assert rel_err(original, expected) <= 1e-5
    try:
        assert adapter.patch() is True
        assert torch.equal(made_before(scores, 0), expected)
        made_before.shk_powerlaw = 0.5  # configurations swav_kernels does not cover keep VISSL's code
        assert torch.equal(made_before(scores, 0), original)
    finally:
        assert adapter.unpatch() is True
    assert SwAVCriterion.forward is TranscribedCriterion.forward


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
