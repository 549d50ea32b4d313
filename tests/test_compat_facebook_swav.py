"""swav_kernels.compat.facebook_swav against a float64 transcription of facebookresearch/swav
main_swav.py: the loss block of train() and distributed_sinkhorn (one process, where its
all_reduce calls are identities).

facebookresearch/swav is a script, not a package, so it is transcribed: main_swav.py at
commit 06b1b7cbaf6ba2a792300d79c7299db98b93b7f9 (the repository's head; the file last changed
in fa0980e746f2e4bde3a4e3f2e5151c0bdb3f7829), lines 288-315 (``# ============ swav loss ...``
of ``train()``) as ``transcribed_block`` and lines 354-376 (``distributed_sinkhorn``) as
``transcribed_sinkhorn``, with ``args.*`` and ``model.module.prototypes.weight`` as parameters
and ``dist.all_reduce`` dropped (one process). The other trainers are compared with their
installed packages (test_compat_lightly/solo_learn/vissl/dinov2.py).
"""
import re
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compat_upstream import assert_like_upstream
from multiprocess import run_in_processes
from problems import make_problem, rel_err
from swav_kernels.compat import facebook_swav as adapter


# ---- transcription of main_swav.py @ 06b1b7cb ---------------------------------------------
def transcribed_sinkhorn(out, epsilon, iterations):
    Q = torch.exp(out / epsilon).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def transcribed_block(output, embedding, weight, queue, use_the_queue, nmb_crops, crops_for_assign,
                      temperature, epsilon, iterations):
    bs = output.shape[0] // sum(nmb_crops)
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = output[bs * crop_id: bs * (crop_id + 1)].detach()
            if queue is not None:
                if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                    use_the_queue = True
                    out = torch.cat((torch.mm(queue[i], weight.t()), out))
                queue[i, bs:] = queue[i, :-bs].clone()
                queue[i, :bs] = embedding[crop_id * bs: (crop_id + 1) * bs]
            q = transcribed_sinkhorn(out, epsilon, iterations)[-bs:]
        subloss = 0
        for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
            x = output[bs * v: bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (np.sum(nmb_crops) - 1)
    loss /= len(crops_for_assign)
    return loss, use_the_queue


# ---- a few training steps -------------------------------------------------------------------
def step_inputs(step, nmb_crops, batch, prototypes, dim=4):
    p = make_problem(n_crops=sum(nmb_crops), batch=batch, prototypes=prototypes, dim=dim, seed=10 + step,
                     dtype=torch.float64)
    return p.embeddings, p.prototypes


def run_steps(block, dtype, steps, nmb_crops, crops_for_assign, batch, prototypes, queue_length, iterations,
              rank=0, world=1):
    """Loss, gradient of the output, use flag and queue after every step; rank's rows of each batch."""
    n_crops = sum(nmb_crops)
    queue = torch.zeros(len(crops_for_assign), queue_length, 4, dtype=dtype) if queue_length else None
    use_the_queue, history = False, []
    for step in range(steps):
        z, c = step_inputs(step, nmb_crops, batch * world, prototypes)
        z = z.view(n_crops, world, batch, -1)[:, rank].reshape(n_crops * batch, -1).to(dtype)
        c = c.to(dtype)
        output = (z @ c.t()).requires_grad_()
        loss, use_the_queue = block(output, z, c, queue, use_the_queue, nmb_crops, crops_for_assign,
                                    0.2, 0.1, iterations)
        loss.backward()
        history.append((loss.detach(), output.grad, use_the_queue, None if queue is None else queue.clone()))
    return history


def ours(output, embedding, weight, queue, use_the_queue, nmb_crops, crops_for_assign, temperature, epsilon,
         iterations):
    return adapter.swav_loss_block(output, embedding, weight, queue, use_the_queue, nmb_crops=nmb_crops,
                                   crops_for_assign=crops_for_assign, temperature=temperature, epsilon=epsilon,
                                   sinkhorn_iterations=iterations)


CASES = [  # nmb_crops, crops_for_assign, batch, K, queue length
    ([2, 2], [0, 1], 3, 7, 0),
    ([2, 2], [0, 1], 3, 7, 6),
    ([2, 1], [1], 2, 5, 2),
    ([2], [0, 1], 1, 6, 2),  # batch 1
    ([2, 2], [0, 1], 2, 1, 4),  # K = 1
]


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("case", CASES)
def test_training_steps_equal_the_transcription(case, iterations):
    nmb_crops, crops_for_assign, batch, prototypes, queue_length = case
    args = (4, nmb_crops, crops_for_assign, batch, prototypes, queue_length, iterations)
    got = run_steps(ours, torch.float32, *args)
    expected = run_steps(transcribed_block, torch.float64, *args)
    for (loss, grad, use, queue), (e_loss, e_grad, e_use, e_queue) in zip(got, expected):
        assert loss.shape == () and loss.dtype == torch.float32
        assert rel_err(loss, e_loss) <= 1e-5 and rel_err(grad, e_grad) <= 1e-4
        assert use == e_use
        if queue is not None:
            assert rel_err(queue, e_queue) <= 1e-6
    if queue_length:  # the queue was used once full, as in the original
        assert any(step[2] for step in got) == (queue_length <= 3 * batch)


@pytest.mark.parametrize("iterations", [0, 3])
def test_distributed_sinkhorn_equals_the_transcription(iterations):
    out = make_problem(batch=9, prototypes=11, scale=8.0).scores  # exp(8/0.05) overflows float32 in the original
    codes = adapter.distributed_sinkhorn(out, 0.05, iterations)
    assert codes.dtype == out.dtype and torch.isfinite(codes).all()
    assert rel_err(codes, transcribed_sinkhorn(out.double(), 0.05, iterations)) <= 1e-4


def test_settings_come_from_args_then_keywords():
    z, c = step_inputs(0, [2, 2], 3, 7)
    output = z @ c.t()
    args = types.SimpleNamespace(nmb_crops=[2, 2], crops_for_assign=[1], temperature=0.3, epsilon=0.07,
                                 sinkhorn_iterations=2, batch_size=3)
    from_args, _ = adapter.swav_loss_block(output, z, c, None, False, args)
    expected, _ = transcribed_block(output.double(), z, c, None, False, [2, 2], [1], 0.3, 0.07, 2)
    assert rel_err(from_args, expected) <= 1e-5
    overridden, _ = adapter.swav_loss_block(output, z, c, None, False, args, temperature=0.1)
    expected, _ = transcribed_block(output.double(), z, c, None, False, [2, 2], [1], 0.1, 0.07, 2)
    assert rel_err(overridden, expected) <= 1e-5


def test_bad_queue_is_named():
    z, c = step_inputs(0, [2, 2], 3, 7)
    with pytest.raises(ValueError, match="queue"):
        adapter.swav_loss_block(z @ c.t(), z, c, torch.zeros(2, 2, 4, dtype=z.dtype), nmb_crops=[2, 2])
    with pytest.raises(ValueError, match="queue"):
        adapter.swav_loss_block(z @ c.t(), z, c, torch.zeros(1, 6, 4, dtype=z.dtype), nmb_crops=[2, 2])


# ---- non-finite inputs: a non-finite loss, as in main_swav.py; check_finite_inputs=True raises
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["output", "queue", "prototypes"])
def test_nonfinite_inputs_like_main_swav_or_raise_when_checked(where, value):
    clean_z, clean_c = (t.float() for t in step_inputs(0, [2, 2], 3, 7))
    z, c = clean_z, clean_c.clone()
    output = z @ c.t()  # the prototypes are poisoned after: only the queue's scores see them
    queue = make_problem(n_crops=2, batch=6, dim=4, seed=3).embeddings.view(2, 6, 4)  # full: used
    {"output": output, "queue": queue, "prototypes": c}[where].view(-1)[1] = value
    loss, _ = adapter.swav_loss_block(output, z, c, queue.clone(), nmb_crops=[2, 2])
    expected, _ = transcribed_block(output, z, c, queue.clone(), False, [2, 2], [0, 1], 0.1, 0.05, 3)
    assert_like_upstream(loss, expected, 1e-5)  # main_swav.py in float32, as it runs
    if value == value and value > 0:  # NaN and +inf: never finite
        assert not torch.isfinite(loss)
    with pytest.raises(ValueError, match=re.escape(f"{where} contains NaN or infinite")):
        adapter.swav_loss_block(output, z, c, queue.clone(), nmb_crops=[2, 2], check_finite_inputs=True)
    poisoned_z = clean_z.clone()
    poisoned_z[0, 0] = value  # enters the queue after this step's loss
    clean_queue = make_problem(n_crops=2, batch=6, dim=4, seed=3).embeddings.view(2, 6, 4)
    with pytest.raises(ValueError, match="embedding contains NaN or infinite"):
        adapter.swav_loss_block(clean_z @ clean_c.t(), poisoned_z, clean_c, clean_queue, nmb_crops=[2, 2],
                                check_finite_inputs=True)
    scores = (clean_z @ clean_c.t())[:3]
    scores[0, 1] = value
    assert_like_upstream(adapter.distributed_sinkhorn(scores), transcribed_sinkhorn(scores, 0.05, 3), 1e-5)
    with pytest.raises(ValueError, match="out contains NaN or infinite"):
        adapter.distributed_sinkhorn(scores, check_finite_inputs=True)


# ---- two gloo ranks equal one process on the concatenated batch -----------------------------
WORLD = 2
SETUP = dict(steps=3, nmb_crops=[2, 1], crops_for_assign=[0, 1], batch=2, prototypes=6, queue_length=4)


def rank_run(rank, world_size):
    return {iterations: run_steps(ours, torch.float32, *SETUP.values(), iterations, rank=rank, world=world_size)
            for iterations in (0, 3)}


def test_two_ranks_equal_one_process():
    ranks = run_in_processes(rank_run, WORLD)
    setup = dict(SETUP, batch=SETUP["batch"] * WORLD, queue_length=SETUP["queue_length"] * WORLD)
    n_crops = sum(SETUP["nmb_crops"])
    for iterations in (0, 3):
        single = run_steps(ours, torch.float32, *setup.values(), iterations)
        assert [s[2] for s in single] == [False, False, True]  # the queue joins at the third step
        for step, (loss, grad, use, _) in enumerate(single):
            per_rank = [r[iterations][step] for r in ranks]
            assert rel_err(sum(r[0] for r in per_rank) / WORLD, loss) <= 1e-6
            rank_grads = torch.stack([r[1].view(n_crops, SETUP["batch"], -1) for r in per_rank], dim=1)
            assert rel_err(rank_grads.reshape(grad.shape) / WORLD, grad) <= 1e-5
            assert all(r[2] == use for r in per_rank)
