"""The numerics contract (DESIGN §4) applied to every benchmark row.

Each row's outputs (forward: the loss, codes or log-sum-exp; forward+backward: the gradients) are
compared with the *truth* of its case, the reference evaluated on the same input values upcast:
in float64 for float32 inputs, in float32 for bfloat16 / float16 inputs (a ``<backend>-scores`` row:
the reference's loss of the scores its user's matmul gave, upcast; ``runner.scores_path_truth``). The error is
``max|out − truth| / max|truth|`` (the worst output). A row of one of this package's backends
(the reference and every kernel backend, with their compiled, scores and CUDA-graph forms) whose
error exceeds its tolerance is failed; the plain peers are trainers' code, not held to the
contract: their error is only shown.
"""
from __future__ import annotations

import math

import torch

from .problem import Problem

# peers that are not this package's code: the loss as trainers write it, eager and compiled
PLAIN_PEERS = ("plain", "plain-compiled")
# DESIGN §4: (forward values, gradients) relative tolerances
FLOAT32_TOLERANCE = (1e-5, 1e-4)
HALF_TOLERANCE = (2e-3, 1e-2)  # bf16 / fp16, and fp32 with TF32 matmuls (fp16's 10-bit mantissa)
# exp overflows float32 above this argument: the plain Sinkhorn's exp(score / ε) then gives inf, NaN codes
EXP_OVERFLOW = math.log(torch.finfo(torch.float32).max)


def is_ours(peer: str) -> bool:
    """Whether ``peer`` runs this package's code (and is held to DESIGN §4)."""
    return peer not in PLAIN_PEERS


def truth_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the truth is evaluated in: float64 for float32 inputs, float32 for 16-bit inputs."""
    return torch.float64 if dtype == torch.float32 else torch.float32


def tolerance(dtype: torch.dtype, pass_: str, allow_tf32: bool, score_bound: float, epsilon: float) -> float:
    """The largest relative error DESIGN §4 allows a row of ``pass_`` (``"fwd"``: values,
    ``"fwd+bwd"``: gradients) on inputs of ``dtype``. Where scores are large, float32 rounding of
    ``x/ε`` grows the bound as in tests/problems.py::logit_tolerance."""
    exact = dtype == torch.float32 and not allow_tf32
    values, gradients = FLOAT32_TOLERANCE if exact else HALF_TOLERANCE
    logits = 8 * torch.finfo(torch.float32).eps * score_bound / epsilon
    return max(values if pass_ == "fwd" else gradients, logits)


def truth_words(dtype: torch.dtype) -> str:
    """What rows of ``dtype`` are compared with, in words."""
    if dtype == torch.float32:
        return "the reference in float64"
    return "the reference in float32 on the upcast inputs"


def upcast(problem: Problem, dtype: torch.dtype) -> Problem:
    """``problem``'s input values in ``dtype`` (embeddings and prototypes requiring grad)."""

    def place(t, grad=False):
        return None if t is None else t.detach().to(dtype).requires_grad_(grad)

    return Problem(problem.shape, place(problem.embeddings, True), place(problem.prototypes, True),
                   place(problem.queue), place(problem.sinkhorn_scores), problem.temperature, problem.epsilon,
                   problem.sinkhorn_iterations)


def rel_err(actual: tuple, expected: tuple) -> float:
    """max over outputs of max|actual − expected| / max|expected| (in float64)."""
    worst = 0.0
    for a, e in zip(actual, expected):
        a, e = a.detach().double(), e.detach().double()
        scale = e.abs().max().item()
        err = (a - e).abs().max().item()
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


def non_finite_reason(peer: str, score_bound: float, epsilon: float) -> str:
    """Why a row's output holds NaN or inf: for a plain peer whose scores overflow ``exp(s/ε)``,
    its documented failure; otherwise a plain statement."""
    if not is_ours(peer) and score_bound / epsilon > EXP_OVERFLOW:
        return (f"non-finite output (NaN or inf): the plain Sinkhorn's exp(score/ε) overflows float32 once "
                f"score/ε > {EXP_OVERFLOW:.1f} (here up to {score_bound / epsilon:g}); its documented failure")
    return "non-finite output (NaN or inf)"
