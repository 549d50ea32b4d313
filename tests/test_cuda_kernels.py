"""Each CUDA kernel primitive against its plain-PyTorch transcription (kernel_oracle.py).

GPU only (marked ``gpu``; reported as skipped elsewhere). The oracle evaluates in float32
on the upcast inputs, so fp16/bf16 kernels are compared with the same function of the same
numbers; where a kernel rounds an intermediate to the input type (the probabilities of the
tensor-core products) the DESIGN §4 gradient tolerance applies.
"""
import math

import pytest
import torch

from legacy_kernel_oracle import OracleKernels
from problems import logit_tolerance, rel_err

pytestmark = pytest.mark.gpu

ORACLE = OracleKernels()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# tolerance (relative to the largest reference value) of sums of probabilities times operands
PRODUCT_TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module")
def kernels():
    from swav_kernels.cuda.kernels import CudaKernels

    cuda = CudaKernels()
    reason = cuda.unavailable_reason(torch.device("cuda"), torch.float32)
    assert reason is None, reason  # a GPU is here: the kernels must run, not be skipped
    return cuda


def _unit_rows(rows, dim, dtype, scale=1.0):
    x = torch.nn.functional.normalize(torch.randn(rows, dim, device="cuda", dtype=torch.float64), dim=1)
    return (x * scale).to(dtype)


# ---- family 2: Sinkhorn ----------------------------------------------------------------------

SINKHORN_SHAPES = [(1, 1, 1), (2, 37, 3001), (3, 130, 257), (1, 700, 65), (2, 5, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SINKHORN_SHAPES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sinkhorn_column_init(kernels, dtype, shape, scale):
    x = (torch.randn(*shape, device="cuda") * scale).to(dtype)
    col_max, col_sum = kernels.sinkhorn_column_init(x, 20.0)
    ref_max, ref_sum = ORACLE.sinkhorn_column_init(x, 20.0)
    assert col_max.shape == ref_max.shape and col_max.dtype == torch.float32
    assert torch.equal(col_max, ref_max)  # the max of identically rounded products is exact
    assert rel_err(col_sum, ref_sum) <= 1e-5
    assert torch.isfinite(col_sum).all() and (col_sum >= 1).all()


ROW_STEP_FLAGS = [  # normalize_rows, want_column_sums, codes_from_row
    (True, True, -1), (True, False, 0), (True, False, 3), (False, False, 0), (True, True, 2), (False, True, -1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SINKHORN_SHAPES)
@pytest.mark.parametrize("flags", ROW_STEP_FLAGS)
def test_sinkhorn_row_step(kernels, dtype, shape, flags):
    normalize_rows, want_column_sums, codes_from_row = flags
    codes_from_row = min(codes_from_row, shape[1] - 1)
    x = (torch.randn(*shape, device="cuda") * 30.0).to(dtype)
    inv_eps, log_rows_total = 20.0, math.log(shape[1] * 3)
    # potentials as the orchestration makes them: exp arguments stay <= log_rows_total
    col_max, col_sum = ORACLE.sinkhorn_column_init(x, inv_eps)
    potential = -(col_max + torch.log(col_sum)) - math.log(shape[2])
    if not normalize_rows:
        potential = -torch.logsumexp(col_max + torch.log(col_sum), dim=1, keepdim=True).expand_as(potential)
        potential = potential.contiguous()
    args = (x, inv_eps, potential, log_rows_total, normalize_rows, want_column_sums, codes_from_row)
    sums, codes = kernels.sinkhorn_row_step(*args)
    ref_sums, ref_codes = ORACLE.sinkhorn_row_step(*args)
    assert sums.shape == ref_sums.shape and codes.shape == ref_codes.shape
    tol = logit_tolerance(x.float(), 1 / inv_eps)
    if want_column_sums:
        assert rel_err(sums, ref_sums) <= tol
    if codes_from_row >= 0:
        assert torch.isfinite(codes).all()
        assert rel_err(codes, ref_codes) <= tol
        if normalize_rows:  # each code row sums to 1 within fp32 rounding (the precision note)
            assert torch.allclose(codes.sum(dim=2), torch.ones_like(codes[..., 0]), atol=1e-5)


def test_sinkhorn_row_step_with_no_output_returns_empty_tensors(kernels):
    x = torch.randn(2, 4, 3, device="cuda")
    sums, codes = kernels.sinkhorn_row_step(x, 20.0, torch.zeros(2, 3, device="cuda"), 1.0, True, False, -1)
    assert sums.shape == (2, 0) and codes.shape == (2, 0, 3)
    sums, codes = kernels.sinkhorn_row_step(x, 20.0, torch.zeros(2, 3, device="cuda"), 1.0, True, False, 4)
    assert codes.shape == (2, 0, 3)


# ---- family 1: prototype scoring + temperature softmax -----------------------------------

SCORING_SHAPES = [  # (M rows, K prototypes, D): ragged against the 64-wide tiles and 32-wide chunks
    (1, 1, 1), (3, 70, 33), (130, 257, 128), (8, 3001, 64), (65, 129, 200), (300, 5, 7),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SCORING_SHAPES)
@pytest.mark.parametrize("with_output", [False, True])
def test_scores_logsumexp(kernels, dtype, shape, with_output):
    rows, prototypes, dim = shape
    z, c = _unit_rows(rows, dim, dtype), _unit_rows(prototypes, dim, dtype)
    lse, out = kernels.scores_logsumexp(z, c, 10.0, with_output)
    ref_lse, ref_out = ORACLE.scores_logsumexp(z, c, 10.0, with_output)
    assert lse.shape == (rows,) and out.shape == ref_out.shape and out.dtype == torch.float32
    assert rel_err(lse, ref_lse) <= 1e-5
    if with_output:
        assert rel_err(out, ref_out) <= PRODUCT_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_logsumexp_where_plain_exp_overflows(kernels, dtype):
    z, c = _unit_rows(50, 16, dtype), _unit_rows(300, 16, dtype)
    lse, out = kernels.scores_logsumexp(z, c, 1000.0, True)  # logits up to 1000: exp overflows fp32
    ref_lse, ref_out = ORACLE.scores_logsumexp(z, c, 1000.0, True)
    assert torch.isfinite(lse).all() and torch.isfinite(out).all()
    assert rel_err(lse, ref_lse) <= 1e-5
    assert rel_err(out, ref_out) <= max(PRODUCT_TOL[dtype], 1e-4)  # logit rounding is amplified by 1000


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SCORING_SHAPES)
def test_softmax_prototype_grad(kernels, dtype, shape):
    rows, prototypes, dim = shape
    z, c = _unit_rows(rows, dim, dtype), _unit_rows(prototypes, dim, dtype)
    lse, _ = ORACLE.scores_logsumexp(z, c, 10.0, False)
    row_weight = torch.randint(0, 3, (rows,), device="cuda").float()
    grad = kernels.softmax_prototype_grad(z, c, lse, row_weight, 10.0)
    expected = ORACLE.softmax_prototype_grad(z, c, lse, row_weight, 10.0)
    assert grad.shape == (prototypes, dim) and grad.dtype == torch.float32
    assert rel_err(grad, expected) <= PRODUCT_TOL[dtype]


# ---- family 3: multi-crop cross-entropy on scores ------------------------------------------

CE_CASES = [  # (V, B, K, crops_for_assign)
    (2, 1, 1, [0, 1]), (4, 3, 3001, [0, 1]), (5, 7, 130, [3]), (3, 2, 64, [2, 0]), (8, 16, 300, [0, 1]),
]


def _ce_problem(case, dtype):
    n_crops, batch, prototypes, crops = case
    s = (torch.randn(n_crops * batch, prototypes, device="cuda") * 0.5).to(dtype)
    codes = torch.softmax(torch.randn(len(crops), batch, prototypes, device="cuda") * 3, dim=-1)
    return s, codes, crops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES)
def test_scores_cross_entropy_forward(kernels, dtype, case):
    s, codes, crops = _ce_problem(case, dtype)
    lse, cross = kernels.scores_cross_entropy_forward(s, codes, crops, 10.0)
    ref_lse, ref_cross = ORACLE.scores_cross_entropy_forward(s, codes, crops, 10.0)
    assert rel_err(lse, ref_lse) <= 1e-5
    assert rel_err(cross, ref_cross) <= 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES)
def test_scores_cross_entropy_backward(kernels, dtype, case):
    s, codes, crops = _ce_problem(case, dtype)
    lse, _ = ORACLE.scores_cross_entropy_forward(s, codes, crops, 10.0)
    scale = torch.tensor(0.37, device="cuda")
    weight = torch.rand(s.shape[0], device="cuda")
    grad = kernels.scores_cross_entropy_backward(s, codes, lse, weight, crops, 10.0, scale)
    expected = ORACLE.scores_cross_entropy_backward(s.cpu(), codes.cpu(), lse.cpu(), weight.cpu(), crops, 10.0,
                                                    scale.cpu())
    assert grad.dtype == s.dtype and grad.shape == s.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # the result is rounded to the dtype of s
    assert rel_err(grad, expected.to("cuda")) <= tol


# ---- determinism ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_every_primitive_is_bitwise_reproducible(kernels, dtype):
    z, c = _unit_rows(200, 128, dtype), _unit_rows(3000, 128, dtype)
    x = (torch.randn(2, 300, 3000, device="cuda") * 10).to(dtype)
    potential = torch.randn(2, 3000, device="cuda")
    s, codes, crops = _ce_problem((8, 25, 3000, [0, 1]), dtype)

    def run():
        lse, out = kernels.scores_logsumexp(z, c, 10.0, True)
        s_lse, cross = kernels.scores_cross_entropy_forward(s, codes, crops, 10.0)
        return (
            *kernels.sinkhorn_column_init(x, 20.0),
            *kernels.sinkhorn_row_step(x, 20.0, potential, 6.0, True, True, 100),
            lse, out,
            kernels.softmax_prototype_grad(z, c, lse, torch.full_like(lse, 2.0), 10.0),
            s_lse, cross,
            kernels.scores_cross_entropy_backward(s, codes, s_lse, torch.full_like(s_lse, 2.0), crops, 10.0,
                                                  torch.tensor(0.5, device="cuda")),
        )

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
