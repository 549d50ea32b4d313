"""Every adapter on a kernel backend: the plain-PyTorch oracle of the kernel contract
(tests/kernel_oracle.py) runs the kernel backends' glue on CPU, so the adapters' calls into
the custom-op losses and the potentials Sinkhorn are checked here against the reference."""
import pytest
import torch

from kernel_oracle import OracleKernels
from problems import make_problem, rel_err
from swav_kernels import register_backend
from swav_kernels.compat import dinov2, facebook_swav, lightly, solo_learn, vissl
from swav_kernels.kernel_backend import KernelBackend

register_backend("oracle", lambda: KernelBackend(OracleKernels()))  # custom ops are registered once per name


def problem():
    return make_problem(n_crops=4, batch=3, prototypes=6, dim=4, queue=3, scale=3.0)


def lightly_run(backend, iterations):
    p = problem()
    scores = p.scores.clone().requires_grad_()
    crops = list(scores.split(3))
    loss = lightly.SwaVLoss(sinkhorn_iterations=iterations, backend=backend)(crops[:2], crops[2:],
                                                                              list(p.queue_scores))
    loss.backward()
    return loss, scores.grad, lightly.sinkhorn(crops[0], iterations, backend=backend)


def solo_run(backend, iterations):
    scores = problem().scores.clone().requires_grad_()
    crops = list(scores.split(3))
    codes = [solo_learn.SinkhornKnopp(iterations, backend=backend)(c) for c in crops]
    loss = solo_learn.swav_loss_func(crops, codes, backend=backend)
    loss.backward()
    return loss, scores.grad, torch.stack(codes)


def facebook_run(backend, iterations):
    p = problem()
    scores = p.scores.clone().requires_grad_()
    loss, _ = facebook_swav.swav_loss_block(scores, p.embeddings, p.prototypes, torch.ones(2, 3, 4), nmb_crops=[2, 2],
                                            sinkhorn_iterations=iterations, backend=backend)
    loss.backward()
    return loss, scores.grad, facebook_swav.distributed_sinkhorn(scores, 0.05, iterations, backend=backend)


def vissl_run(backend, iterations):
    p = problem()
    scores = p.scores.clone().requires_grad_()
    config = {"temperature": 0.1, "crops_for_assign": [0, 1], "num_crops": 4, "num_iters": iterations,
              "epsilon": 0.05, "use_double_precision": False, "num_prototypes": [6], "embedding_dim": 4,
              "temp_hard_assignment_iters": 0, "output_dir": "", "queue": {"local_queue_length": 3, "start_iter": 0}}
    torch.manual_seed(0)
    loss = vissl.SwAVLoss(config, backend=backend)([p.embeddings, scores], None)
    loss.backward()
    return loss, scores.grad, None


def dinov2_run(backend, iterations):
    scores = problem().scores * 5
    codes = torch.cat((dinov2.sinkhorn_knopp_teacher(scores, 0.07, iterations, backend=backend),
                       dinov2.ibot_sinkhorn_knopp_teacher(scores, 0.07, torch.tensor([12]), iterations,
                                                          backend=backend)))
    return None, None, codes


def compare(run, iterations):
    got, expected = run("oracle", iterations), run("reference", iterations)
    for ours, theirs, tolerance in zip(got, expected, (1e-5, 1e-4, 1e-5)):
        if theirs is not None:
            assert ours.dtype == theirs.dtype and rel_err(ours, theirs) <= tolerance


@pytest.mark.parametrize("run", [lightly_run, solo_run, facebook_run, vissl_run, dinov2_run])
def test_adapters_on_a_kernel_backend_equal_the_reference(run):
    compare(run, 3)


@pytest.mark.parametrize("run", [vissl_run, dinov2_run])
def test_adapters_whose_codes_sum_to_one_without_iterations(run):
    compare(run, 0)  # VISSL normalises every sample's codes at the end; DINOv2 only computes codes


@pytest.mark.parametrize("run", [lightly_run, solo_run, facebook_run])
def test_losses_without_sinkhorn_iterations_on_a_kernel_backend(run):
    compare(run, 0)  # code rows do not sum to 1 here: each lse is weighted by its codes' mass


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_scores_on_a_kernel_backend_as_on_the_reference(value):
    """A non-finite score gives NaN through the kernel backends' glue as on the reference
    (DESIGN.md §3), -inf included."""
    def results(backend):
        p = problem()
        scores = p.scores.clone()
        scores[4, 2] = value
        crops = list(scores.split(3))
        codes = [solo_learn.SinkhornKnopp(backend=backend)(c) for c in crops]
        return torch.stack([
            lightly.SwaVLoss(backend=backend)(crops[:2], crops[2:], list(p.queue_scores))[0],
            solo_learn.swav_loss_func(crops, codes, backend=backend),
            facebook_swav.swav_loss_block(scores, p.embeddings, p.prototypes, None, nmb_crops=[2, 2],
                                          backend=backend)[0],
            dinov2.sinkhorn_knopp_teacher(scores, 0.07, backend=backend).sum(),
        ])

    got, expected = results("oracle"), results("reference")
    assert torch.isnan(got).all() and torch.isnan(expected).all(), (got, expected)
