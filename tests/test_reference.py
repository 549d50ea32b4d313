"""The reference against the independent float64 transcription, and DESIGN §1's identities."""
import math

import pytest
import torch
import torch.nn.functional as F

from problems import make_problem, rel_err
from swav_kernels import reference as R
from transcription import codes_f64, sinkhorn_f64, swav_loss_f64

TAU, EPS = 0.1, 0.05

CASES = {
    # name: make_problem kwargs, iterations
    "paper-crops": (dict(n_crops=8, batch=8, prototypes=60, dim=16), 3),
    "queue": (dict(n_crops=8, batch=8, prototypes=60, dim=16, queue=24), 3),
    "one-assign-crop": (dict(n_crops=4, batch=5, prototypes=33, dim=7, crops_for_assign=(2,)), 3),
    "assign-crops-not-first": (dict(n_crops=5, batch=3, prototypes=9, dim=4, crops_for_assign=(3, 1)), 3),
    "two-crops": (dict(n_crops=2, batch=9, prototypes=17, dim=5), 3),
    "batch-1": (dict(n_crops=3, batch=1, prototypes=12, dim=4), 3),
    "k-1": (dict(n_crops=3, batch=4, prototypes=1, dim=4), 3),
    "k-1-queue": (dict(n_crops=3, batch=4, prototypes=1, dim=4, queue=3), 3),
    # exp(score/ε) overflows float32 (score up to 20 → exp(400)); float64 still holds it
    "overflow": (dict(n_crops=4, batch=6, prototypes=25, dim=6, scale=20.0), 3),
    "overflow-queue": (dict(n_crops=4, batch=6, prototypes=25, dim=6, scale=20.0, queue=10), 3),
}
CASES.update({f"iterations-{t}": (dict(n_crops=4, batch=6, prototypes=21, dim=6, queue=5), t) for t in range(6)})


def _loss_error(actual, expected):
    expected = expected.detach().double()
    err = abs(actual.detach().double() - expected).item()
    return err / abs(expected).item() if expected != 0 else err


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_matches_float64_transcription(case):
    kwargs, iterations = CASES[case]
    p = make_problem(**kwargs)
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    loss = R.swav_loss_from_embeddings_reference(
        z, c, p.n_crops, p.crops_for_assign, TAU, EPS, iterations, p.queue
    )
    loss.backward()

    z64 = p.embeddings.double().requires_grad_()
    c64 = p.prototypes.double().requires_grad_()
    queue_scores64 = None if p.queue is None else p.queue.double() @ c64.detach().t()
    loss64 = swav_loss_f64(z64 @ c64.t(), p.n_crops, p.crops_for_assign, TAU, EPS, iterations, queue_scores64)
    loss64.backward()

    assert loss.dtype == torch.float32
    assert math.isfinite(loss.item())
    assert _loss_error(loss, loss64) <= 1e-6
    assert rel_err(z.grad, z64.grad) <= 1e-5
    assert rel_err(c.grad, c64.grad) <= 1e-5

    batch = p.embeddings.shape[0] // p.n_crops
    assign = p.scores.view(p.n_crops, batch, -1)[list(p.crops_for_assign)]
    codes = R.assignment_codes_reference(assign, p.queue_scores, EPS, iterations)
    expected_codes = codes_f64(p.scores, p.n_crops, p.crops_for_assign, EPS, iterations, p.queue_scores)
    assert torch.isfinite(codes).all()
    assert rel_err(codes, expected_codes) <= 1e-5


@pytest.mark.parametrize("case", ["paper-crops", "overflow", "iterations-0", "k-1"])
def test_gradient_wrt_scores_matches_float64(case):
    kwargs, iterations = CASES[case]
    p = make_problem(**kwargs)
    s = p.scores.clone().requires_grad_()
    R.swav_loss_reference(s, p.n_crops, p.crops_for_assign, TAU, EPS, iterations).backward()
    s64 = p.scores.double().requires_grad_()
    swav_loss_f64(s64, p.n_crops, p.crops_for_assign, TAU, EPS, iterations).backward()
    assert rel_err(s.grad, s64.grad) <= 1e-5


def test_overflow_case_really_overflows_the_plain_formula():
    p = make_problem(**CASES["overflow"][0])
    plain = torch.exp(p.scores / EPS)  # what facebookresearch/swav computes in float32
    assert not torch.isfinite(plain).all()
    codes = R.sinkhorn_reference(p.scores, EPS, 3)
    assert torch.isfinite(codes).all()
    assert torch.allclose(codes.sum(dim=1), torch.ones(codes.shape[0]), atol=1e-6)


def test_extreme_scores_stay_finite_and_exact():
    # Scores of ±1e4 at ε = 0.05: far outside float64's exp range too. Sinkhorn with T ≥ 1 is
    # invariant to a per-prototype shift, which makes a float64 oracle possible again.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    shift = torch.tensor([1e4, -1e4, 0.0, 5e3, -3e3], dtype=torch.float64)
    codes = R.sinkhorn_reference((x + shift).float(), EPS, 3)
    assert torch.isfinite(codes).all()
    assert rel_err(codes, sinkhorn_f64(x, EPS, 3)) <= 5e-3  # float32 input rounding of 1e4-sized values


def test_row_with_vanishing_mass_gets_a_finite_code():
    # Row 0 is ~1e4 below every other row: exp(x/ε − colmax) underflows in the whole row, yet its
    # code is well defined (the per-sample step renormalises it) and must be a distribution.
    x = torch.randn(6, 4, dtype=torch.float64)
    x[0] -= 500.0
    codes = R.sinkhorn_reference(x, EPS, 3)
    assert torch.isfinite(codes).all()
    assert torch.allclose(codes.sum(dim=1), torch.ones(6, dtype=torch.float64))


def test_sinkhorn_rows_sum_to_one_and_columns_converge_to_equal_partition():
    x = torch.randn(40, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    imbalance = []
    for iterations in range(1, 7):
        codes = R.sinkhorn_reference(x, EPS, iterations)
        assert torch.allclose(codes.sum(dim=1), torch.ones(40, dtype=torch.float64))
        imbalance.append((codes.sum(dim=0) - 40 / 8).abs().sum().item())
    # Sinkhorn's marginal violation never grows, and vanishes at convergence
    assert all(b <= a + 1e-12 for a, b in zip(imbalance, imbalance[1:]))
    converged = R.sinkhorn_reference(x, EPS, 500)
    assert torch.allclose(converged.sum(dim=0), torch.full((8,), 5.0, dtype=torch.float64), atol=1e-6)


def test_sinkhorn_zero_iterations_is_normalised_exp():
    x = torch.randn(6, 5, dtype=torch.float64)
    codes = R.sinkhorn_reference(x, EPS, 0)
    expected = torch.softmax((x / EPS).flatten(), dim=0).view(6, 5) * 6
    assert torch.allclose(codes, expected)


def test_sinkhorn_invariant_to_per_prototype_shift():
    x = torch.randn(9, 6, dtype=torch.float64)
    shift = torch.randn(6, dtype=torch.float64) * 3
    assert torch.allclose(R.sinkhorn_reference(x, EPS, 3), R.sinkhorn_reference(x + shift, EPS, 3))


def test_sinkhorn_batched_equals_one_by_one():
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    batched = R.sinkhorn_reference(x, EPS, 3)
    for g in range(3):
        assert torch.allclose(batched[g], R.sinkhorn_reference(x[g], EPS, 3))


def test_queue_order_does_not_matter():
    # facebookresearch/swav prepends the queue, lightly appends it: same codes for the batch.
    x = torch.randn(5, 11, dtype=torch.float64)
    queue = torch.randn(8, 11, dtype=torch.float64)
    prepended = R.sinkhorn_reference(torch.cat((queue, x)), EPS, 3)[-5:]
    appended = R.sinkhorn_reference(torch.cat((x, queue)), EPS, 3)[:5]
    assert torch.allclose(prepended, appended)


def test_identity_log_softmax_cross_entropy():
    # −Σ_k q log softmax(s/τ) = lse(s/τ) − (q·s)/τ   when rows of q sum to 1
    s = torch.randn(10, 13, dtype=torch.float64)
    q = torch.softmax(torch.randn(10, 13, dtype=torch.float64), dim=1)
    lhs = -(q * F.log_softmax(s / TAU, dim=1)).sum(dim=1)
    rhs = torch.logsumexp(s / TAU, dim=1) - (q * s).sum(dim=1) / TAU
    assert torch.allclose(lhs, rhs)


def test_identity_loss_from_lse_and_projected_codes():
    # The loss assembled from one lse per crop and cross terms (q_i C)·z_v equals the reference.
    p = make_problem(n_crops=5, batch=4, prototypes=15, dim=6, crops_for_assign=(0, 2), dtype=torch.float64)
    V, B = p.n_crops, 4
    assign = p.scores.view(V, B, -1)[list(p.crops_for_assign)]
    codes = R.assignment_codes_reference(assign, None, EPS, 3)
    lse = torch.logsumexp(p.scores / TAU, dim=1).view(V, B)
    z = p.embeddings.view(V, B, -1)
    total = 0.0
    for a, i in enumerate(p.crops_for_assign):
        projected = codes[a] @ p.prototypes  # W_i = q_i C, (B, D)
        for v in range(V):
            if v != i:
                cross = (projected * z[v]).sum(dim=1) / TAU  # = q_i[b]·S_v[b] / τ
                total = total + (lse[v] - cross).mean() / (V - 1)
    total = total / len(p.crops_for_assign)
    expected = R.swapped_prediction_reference(p.scores, codes, V, p.crops_for_assign, TAU)
    assert torch.allclose(total, expected)


def test_identity_closed_form_gradient():
    # ∂loss/∂S_v = (n_v softmax(S_v/τ) − Σ_{i∈A, i≠v} q_i) / (τ |A| (V−1) B);  ∂Z = ∂S C;  ∂C = ∂Sᵀ Z
    p = make_problem(n_crops=5, batch=4, prototypes=15, dim=6, crops_for_assign=(0, 2), queue=3,
                     dtype=torch.float64)
    V, B, A = p.n_crops, 4, p.crops_for_assign
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    R.swav_loss_from_embeddings_reference(z, c, V, A, TAU, EPS, 3, p.queue).backward()

    assign = p.scores.view(V, B, -1)[list(A)]
    codes = R.assignment_codes_reference(assign, p.queue_scores, EPS, 3)
    softmax = torch.softmax(p.scores / TAU, dim=1).view(V, B, -1)
    grad_s = torch.zeros_like(softmax)
    for v in range(V):
        others = [a for a, i in enumerate(A) if i != v]
        grad_s[v] = len(others) * softmax[v] - sum((codes[a] for a in others), torch.zeros_like(softmax[v]))
    grad_s = grad_s.view(V * B, -1) / (TAU * len(A) * (V - 1) * B)
    assert torch.allclose(z.grad, grad_s @ p.prototypes)
    assert torch.allclose(c.grad, grad_s.t() @ p.embeddings)


def test_half_precision_is_evaluated_in_float32():
    p = make_problem(n_crops=4, batch=6, prototypes=21, dim=6, dtype=torch.bfloat16)
    loss = R.swav_loss_reference(p.scores, 4, (0, 1), TAU, EPS, 3)
    assert loss.dtype == torch.float32
    expected = R.swav_loss_reference(p.scores.float(), 4, (0, 1), TAU, EPS, 3)
    assert loss.item() == expected.item()
