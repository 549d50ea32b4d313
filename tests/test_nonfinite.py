"""Non-finite inputs: by default (no host sync) every entry point returns NaN, never a finite
number; ``check_finite_inputs=True`` raises a ValueError naming the input instead.

Each input of each entry point, NaN, +inf and −inf, on the reference and on the Triton kernels
(interpreted on CPU).
"""
import pytest
import torch

from problems import make_problem
from swav_kernels import sinkhorn, swapped_prediction_loss, swav_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["reference"] + (["triton"] if pytest.importorskip("triton") else [])
VALUES = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
P = make_problem(n_crops=4, batch=3, prototypes=11, dim=6, queue=5)


def poisoned(tensor, value, row=1):
    """A copy of ``tensor`` on the device with ``value`` in element 1 of row ``row``."""
    tensor = tensor.detach().clone().to(DEVICE)
    tensor.view(-1, tensor.shape[-1])[row, 1] = value
    return tensor


def place(tensors, bad, value, row):
    return {k: poisoned(v, value, row) if k == bad else v.to(DEVICE) for k, v in tensors.items()}


def fused(bad, value, backend, row=1, **kwargs):
    tensors = place(dict(inputs=P.embeddings, prototypes=P.prototypes, queue=P.queue), bad, value, row)
    return swav_loss(tensors["inputs"], tensors["prototypes"], nmb_crops=4, queue=tensors["queue"],
                     backend=backend, **kwargs)


def scores_path(bad, value, backend, row=1, **kwargs):
    tensors = place(dict(inputs=P.scores, queue_scores=P.queue_scores), bad, value, row)
    return swav_loss(tensors["inputs"], nmb_crops=4, queue_scores=tensors["queue_scores"], backend=backend, **kwargs)


def given_codes(bad, value, backend, row=1, **kwargs):
    codes = torch.softmax(torch.randn(2, 3, 11), dim=-1)
    tensors = place(dict(inputs=P.scores, codes=codes), bad, value, row)
    return swapped_prediction_loss(tensors["inputs"], tensors["codes"], (0, 1), backend=backend, **kwargs)


CALLS = {"swav_loss (embeddings)": (fused, ["inputs", "prototypes", "queue"]),
         "swav_loss (scores)": (scores_path, ["inputs", "queue_scores"]),
         "swapped_prediction_loss": (given_codes, ["inputs", "codes"])}
CASES = [(call, bad) for call, (_, inputs) in CALLS.items() for bad in inputs]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", sorted(VALUES))
@pytest.mark.parametrize("call, bad", CASES)
def test_losses_are_nan(call, bad, value, backend):
    # row 1: crop 0 (an assign crop) or the first queue/codes block; row 9: crop 3, which no codes come from
    for row in (1, 9) if bad == "inputs" else (1,):
        loss = CALLS[call][0](bad, VALUES[value], backend, row=row)
        assert torch.isnan(loss), (row, loss)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", sorted(VALUES))
def test_sinkhorn_codes_are_nan_in_the_problem_that_holds_the_value(value, backend):
    scores = poisoned(P.scores, VALUES[value], row=4).view(4, 3, 11)  # in problem 1
    codes = sinkhorn(scores, backend=backend)
    assert torch.isnan(codes[1]).all()
    assert torch.isfinite(codes[[0, 2, 3]]).all()


@pytest.mark.parametrize("call, bad", CASES)
def test_check_finite_inputs_names_the_input(call, bad):
    with pytest.raises(ValueError, match=f"{bad} contains NaN or infinite values"):
        CALLS[call][0](bad, float("inf"), "reference", check_finite_inputs=True)
