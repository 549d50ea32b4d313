"""SwAVLoss: module form and the facebookresearch/swav queue semantics."""
import pytest
import torch

from problems import make_problem
from swav_kernels import SwAVLoss, swav_loss

KW = dict(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, backend="reference")


def test_module_without_queue_equals_function():
    p = make_problem(n_crops=8, batch=3, prototypes=13, dim=6)
    module = SwAVLoss(nmb_crops=[2, 6], **KW)
    assert torch.equal(module(p.embeddings, p.prototypes), swav_loss(p.embeddings, p.prototypes, nmb_crops=8, **KW))
    assert torch.equal(module(p.scores), swav_loss(p.scores, nmb_crops=8, **KW))


def test_queue_fills_newest_first_and_is_used_once_full():
    V, B, D, K, L = 4, 3, 5, 11, 7  # L not a multiple of B: the third step overflows the queue
    module = SwAVLoss(nmb_crops=V, crops_for_assign=(0, 2), queue_length=L, feat_dim=D, **KW)
    steps = [make_problem(n_crops=V, batch=B, prototypes=K, dim=D, seed=s) for s in range(4)]
    prototypes = steps[0].prototypes
    history = []  # per step: the (|A|, B, D) assign-crop embeddings
    for step, p in enumerate(steps):
        expected_queue = None
        if module.queue_is_full:
            expected_queue = module.queue.clone()
            # newest first: the last batch's crops fill the front rows
            rows = torch.cat([h for h in reversed(history)], dim=1)[:, :L]
            assert torch.equal(expected_queue, rows)
        loss = module(p.embeddings, prototypes)
        reference = swav_loss(p.embeddings, prototypes, nmb_crops=V, crops_for_assign=(0, 2),
                              queue=expected_queue, **KW)
        assert torch.equal(loss, reference)
        history.append(p.embeddings.view(V, B, D)[[0, 2]])
        assert module.queue_is_full == ((step + 1) * B >= L)
    assert int(module.queue_filled) == L


def test_queue_is_in_state_dict_and_resets():
    module = SwAVLoss(nmb_crops=2, crops_for_assign=(0,), queue_length=4, feat_dim=3, **KW)
    p = make_problem(n_crops=2, batch=4, prototypes=5, dim=3, crops_for_assign=(0,))
    module(p.embeddings, p.prototypes)
    state = module.state_dict()
    assert set(state) == {"queue", "queue_filled"}
    restored = SwAVLoss(nmb_crops=2, crops_for_assign=(0,), queue_length=4, feat_dim=3, **KW)
    restored.load_state_dict(state)
    assert restored.queue_is_full and torch.equal(restored.queue, module.queue)
    restored.reset_queue()
    assert not restored.queue_is_full and not restored.queue.any()


def test_queue_gradients_do_not_flow_into_queue():
    p = make_problem(n_crops=2, batch=4, prototypes=5, dim=3, crops_for_assign=(0,))
    module = SwAVLoss(nmb_crops=2, crops_for_assign=(0,), queue_length=4, feat_dim=3, **KW)
    z = p.embeddings.clone().requires_grad_()
    module(z, p.prototypes)
    loss = module(z, p.prototypes)
    loss.backward()
    assert not module.queue.requires_grad
    assert torch.isfinite(z.grad).all()


def test_module_queue_needs_embeddings_and_feat_dim():
    with pytest.raises(ValueError, match="feat_dim"):
        SwAVLoss(queue_length=8)
    module = SwAVLoss(nmb_crops=2, queue_length=8, feat_dim=4, **KW)
    with pytest.raises(ValueError, match="embeddings, prototypes"):
        module(torch.randn(4, 6))
    with pytest.raises(ValueError, match="feat_dim=4"):
        module(torch.randn(4, 6), torch.randn(5, 6))


def test_a_queue_on_another_device_than_the_embeddings_is_a_clear_error():
    # before the queue is full it is not passed to the loss, so the module itself must say it
    module = SwAVLoss(nmb_crops=[2, 2], queue_length=8, feat_dim=4)
    z = torch.nn.functional.normalize(torch.randn(8, 4), dim=1).to("meta")
    c = torch.randn(5, 4, device="meta")
    with pytest.raises(ValueError, match="move the module"):
        module(z, c)
