"""Each Triton primitive against its plain-PyTorch transcription (tests/kernel_oracle.py).

On CPU these run in Triton's interpreter, where tl.dot on bfloat16 operands is unreliable:
the scoring kernels are checked there in fp32 and fp16, bfloat16 on a GPU (marked gpu).
"""
import pytest
import torch

pytest.importorskip("triton")

from kernel_oracle import OracleKernels  # noqa: E402
from problems import logit_tolerance, rel_err  # noqa: E402
from swav_kernels.triton import cross_entropy, scoring, sinkhorn  # noqa: E402
from swav_kernels.triton.kernels import TritonKernels  # noqa: E402

ORACLE = OracleKernels()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
DOT_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def randn(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape) * scale).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_column_init(dtype, splits, scale):
    x = randn(2, 53, 29, dtype=dtype, scale=scale)
    col_max, col_sum = sinkhorn.column_init(x, 20.0, splits=splits)
    expected_max, expected_sum = ORACLE.sinkhorn_column_init(x.cpu(), 20.0)
    assert rel_err(col_max.cpu(), expected_max) <= 1e-6
    assert rel_err(col_sum.cpu(), expected_sum) <= logit_tolerance(x.float(), 1 / 20.0)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("normalize, column_sums, codes_from_row",
                         [(True, True, -1), (True, False, 0), (True, True, 30), (False, False, 0), (False, True, 12)])
def test_row_step(dtype, normalize, column_sums, codes_from_row):
    x = randn(2, 37, 300, dtype=dtype, scale=3.0)
    col_max, col_sum = ORACLE.sinkhorn_column_init(x.cpu(), 20.0)
    potential = (-(col_max + col_sum.log()) - 5.7).to(DEVICE)
    log_rows = 3.6
    sums, codes = sinkhorn.row_step(x, 20.0, potential, log_rows, normalize, column_sums, codes_from_row)
    expected_sums, expected_codes = ORACLE.sinkhorn_row_step(x.cpu(), 20.0, potential.cpu(), log_rows, normalize,
                                                             column_sums, codes_from_row)
    assert sums.shape == expected_sums.shape and codes.shape == expected_codes.shape
    tolerance = logit_tolerance(x.float(), 1 / 20.0)
    if column_sums:
        assert rel_err(sums.cpu(), expected_sums) <= tolerance
    if codes_from_row >= 0:
        assert rel_err(codes.cpu(), expected_codes) <= tolerance


@pytest.mark.parametrize("dtype", DOT_DTYPES)
@pytest.mark.parametrize("rows, prototypes, dim", [(37, 53, 5), (64, 300, 16), (1, 1, 1), (70, 129, 33)])
@pytest.mark.parametrize("splits", [None, 1, 3])
def test_scores_logsumexp_and_prototype_grad(dtype, rows, prototypes, dim, splits):
    z = torch.nn.functional.normalize(randn(rows, dim), dim=1).to(dtype)
    c = torch.nn.functional.normalize(randn(prototypes, dim), dim=1).to(dtype)
    lse, out = scoring.scores_logsumexp(z, c, 10.0, True, splits=splits)
    expected_lse, expected_out = ORACLE.scores_logsumexp(z.cpu(), c.cpu(), 10.0, True)
    assert rel_err(lse.cpu(), expected_lse) <= TOLERANCE[dtype]
    assert rel_err(out.cpu(), expected_out) <= TOLERANCE[dtype]
    lse_only, empty = scoring.scores_logsumexp(z, c, 10.0, False, splits=splits)
    assert empty.shape == (0, dim) and torch.equal(lse_only, lse)
    weight = torch.rand(rows).to(DEVICE)
    grad = scoring.softmax_prototype_grad(z, c, lse, weight, 10.0, splits=splits)
    expected = ORACLE.softmax_prototype_grad(z.cpu(), c.cpu(), expected_lse, weight.cpu(), 10.0)
    assert grad.shape == (prototypes, dim)
    assert rel_err(grad.cpu(), expected) <= 5 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("crops_for_assign", [(0, 1), (2,), (3, 0, 1)])
@pytest.mark.parametrize("prototypes", [1, 29, 1500])
def test_cross_entropy_forward_and_backward(dtype, crops_for_assign, prototypes):
    n_crops, batch = 4, 3
    s = randn(n_crops * batch, prototypes, dtype=dtype)
    codes = torch.softmax(torch.randn(len(crops_for_assign), batch, prototypes), dim=-1).to(DEVICE)
    lse, cross = cross_entropy.cross_entropy_forward(s, codes, crops_for_assign, 10.0)
    expected_lse, expected_cross = ORACLE.scores_cross_entropy_forward(s.cpu(), codes.cpu(), crops_for_assign, 10.0)
    assert rel_err(lse.cpu(), expected_lse) <= 1e-6
    assert rel_err(cross.cpu(), expected_cross) <= 1e-5
    scale = torch.tensor(0.37, device=DEVICE)
    weight = torch.rand(n_crops * batch).to(DEVICE)
    grad = cross_entropy.cross_entropy_backward(s, codes, lse, weight, crops_for_assign, 10.0, scale)
    expected = ORACLE.scores_cross_entropy_backward(s.cpu(), codes.cpu(), expected_lse, weight.cpu(),
                                                    crops_for_assign, 10.0, scale.cpu())
    assert grad.dtype == dtype
    assert rel_err(grad.cpu().float(), expected.float()) <= TOLERANCE[dtype]


KERNELS = TritonKernels()


def zeros(*shape, **kwargs):
    return torch.zeros(*shape, device=DEVICE, **kwargs)


X = zeros(2, 5, 7)


@pytest.mark.parametrize("call, error, message", [
    (lambda: KERNELS.sinkhorn_column_init(X.double(), 1.0), TypeError,
     "x must be float32, float16 or bfloat16 for the Triton kernels, got torch.float64"),
    (lambda: KERNELS.sinkhorn_column_init(X[0], 1.0), ValueError, "x must be 3-D"),
    (lambda: KERNELS.sinkhorn_column_init(X.transpose(1, 2), 1.0), ValueError, "x must be contiguous"),
    (lambda: KERNELS.sinkhorn_row_step(X, 1.0, zeros(2, 6), 0.0, True, True, -1), ValueError,
     r"col_potential must have shape \(2, 7\)"),
    (lambda: KERNELS.sinkhorn_row_step(X, 1.0, zeros(2, 7), 0.0, True, True, 5), ValueError,
     "codes_from_row must be"),
    (lambda: KERNELS.scores_logsumexp(zeros(3, 4), zeros(5, 4).half(), 1.0, True), TypeError,
     "c has dtype"),
    (lambda: KERNELS.scores_logsumexp(zeros(3, 4), zeros(5, 3), 1.0, True), ValueError,
     r"c must have shape \(K, D=4\)"),
    (lambda: KERNELS.softmax_prototype_grad(zeros(3, 4), zeros(5, 4), zeros(2), zeros(3),
                                            1.0), ValueError, r"lse must have shape \(3,\)"),
    (lambda: KERNELS.scores_cross_entropy_forward(zeros(6, 5), zeros(2, 4, 5), [0, 1], 1.0), ValueError,
     "codes must have shape"),
    (lambda: KERNELS.scores_cross_entropy_forward(zeros(6, 5), zeros(2, 3, 5), [0], 1.0), ValueError,
     "crops_for_assign names 1 crops"),
    (lambda: KERNELS.scores_cross_entropy_backward(zeros(6, 5), zeros(2, 3, 5), zeros(6),
                                                   zeros(6), [0, 1], 1.0, zeros(2)), ValueError,
     "scale must be"),
    (lambda: KERNELS.scores_cross_entropy_backward(zeros(6, 5), zeros(2, 3, 5), zeros(6),
                                                   zeros(5), [0, 1], 1.0, zeros(())), ValueError,
     r"row_weight must have shape \(6,\)"),
])
def test_kernels_reject_bad_tensors_before_launch(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unavailable_reasons():
    assert "float64" in KERNELS.unavailable_reason(torch.device(DEVICE), torch.float64)
    assert KERNELS.unavailable_reason(torch.device(DEVICE), torch.bfloat16) is None
