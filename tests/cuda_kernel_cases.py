"""The checks of each CUDA kernel (swav_kernels/cuda/contract.py) against its transcription
(cuda_kernel_oracle.py), shared by the CPU emulation (test_cuda_emulated_kernels.py) and the GPU
(test_cuda_kernels.py): each ``check_*`` takes ``KernelLaunchers`` and a device.

Shapes are ragged against the kernels' blocking: 32 prototypes per column block and per lane
stride, 8 rows per row block, 8 crops per loss block, 64-row chunks of the queue shift.
"""
import math

import torch

from cuda_kernel_oracle import CudaKernelOracle
from problems import logit_tolerance, rel_err

ORACLE = CudaKernelOracle()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INV_EPS, INV_TAU = 20.0, 10.0

# (G, L, B, K, V): groups, queued rows, batch rows per group, prototypes, crops of the batch segment
SINKHORN_SHAPES = [(1, 0, 1, 1, 2), (2, 5, 3, 70, 4), (3, 0, 9, 33, 3), (1, 37, 4, 5, 2), (2, 3, 2, 300, 3)]


def sinkhorn_problem(shape, dtype, device, scale=30.0, generator=None):
    """(queue (G, L, K) or None, crop-major batch scores (V·B, K), first rows of the groups' crops)."""
    groups, queued, batch, cols, n_crops = shape
    queue = (torch.randn(groups, queued, cols, generator=generator) * scale).to(device, dtype) if queued else None
    scores = (torch.randn(n_crops * batch, cols, generator=generator) * scale).to(device, dtype)
    crops = list(range(n_crops))[::-1][:groups]  # the last crops, reversed: rows far from the start
    return queue, scores, [c * batch for c in crops]


def _step_inputs(shape, dtype, device):
    queue, scores, first_rows = sinkhorn_problem(shape, dtype, device)
    groups, queued, batch, cols, _ = shape
    f32 = dict(device=device, dtype=torch.float32)
    row_potential = torch.randn(groups, queued + batch + 3, **f32)  # a row stride wider than the rows
    column_max = torch.randn(groups, cols, **f32)
    column_sumexp = torch.rand(groups, cols, **f32) + 0.5
    return queue, scores, first_rows, batch, row_potential, column_max, column_sumexp


def _run_steps(kernels, inputs, accumulate):
    """Every Sinkhorn kernel once, the outputs of one feeding the next, as the backend strings them."""
    queue, scores, first_rows, batch, b, column_max, column_sumexp = inputs
    column_max, column_sumexp = column_max.clone(), column_sumexp.clone()
    groups, cols = len(first_rows), scores.shape[1]
    potential = torch.empty(groups, cols, device=scores.device)
    kernels.sinkhorn_columns(queue, scores, first_rows, batch, INV_EPS, b, column_max, column_sumexp, accumulate,
                             potential, math.log(cols))
    row_potential = torch.full_like(b, 7.0)
    kernels.sinkhorn_rows(queue, scores, first_rows, batch, INV_EPS, potential, row_potential)
    codes = torch.empty(groups, batch, cols, device=scores.device)
    kernels.sinkhorn_codes(scores, first_rows, batch, INV_EPS, potential, True, codes)
    unnormalized = torch.empty_like(codes)
    kernels.sinkhorn_codes(scores, first_rows, batch, INV_EPS, potential, False, unnormalized)
    return column_max, column_sumexp, potential, row_potential, codes, unnormalized


def check_sinkhorn_steps(kernels, device, dtype, shape, accumulate):
    inputs = _step_inputs(shape, dtype, device)
    got, expected = _run_steps(kernels, inputs, accumulate), _run_steps(ORACLE, inputs, accumulate)
    tol = logit_tolerance(inputs[1].float(), 1 / INV_EPS)
    names = ("column_max", "column_sumexp", "column_potential", "row_potential", "codes", "unnormalized codes")
    for name, actual, ref in zip(names, got, expected):
        assert actual.shape == ref.shape, name
        assert torch.isfinite(actual).all(), name
        assert rel_err(actual, ref) <= tol, (name, rel_err(actual, ref), tol)
    assert torch.equal(got[3][:, -3:], torch.full_like(got[3][:, -3:], 7.0))  # beyond the rows: untouched
    row_sums = got[4].double().sum(dim=2)
    assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-5)


def check_column_outputs_are_optional(kernels, device):
    queue, scores, first_rows = sinkhorn_problem((2, 4, 3, 40, 3), torch.float32, device)
    f32 = dict(device=device, dtype=torch.float32)
    both = [torch.empty(2, 40, **f32) for _ in range(3)]
    kernels.sinkhorn_columns(queue, scores, first_rows, 3, INV_EPS, None, both[0], both[1], False, both[2], 2.0)
    stats = [torch.empty(2, 40, **f32) for _ in range(2)]
    kernels.sinkhorn_columns(queue, scores, first_rows, 3, INV_EPS, None, stats[0], stats[1], False, None, 2.0)
    potential = torch.empty(2, 40, **f32)
    kernels.sinkhorn_columns(queue, scores, first_rows, 3, INV_EPS, None, None, None, False, potential, 2.0)
    assert torch.equal(stats[0], both[0]) and torch.equal(stats[1], both[1]) and torch.equal(potential, both[2])
    assert torch.equal(potential, -2.0 - (stats[0] + torch.log(stats[1])))


def check_accumulated_chunks_equal_one_pass(kernels, device):
    """The recompute mode's column pass: chunks of queue rows of one group, accumulated, then the
    batch rows of every group; the potential equals one pass over all rows (within rounding)."""
    queue, scores, first_rows = sinkhorn_problem((2, 11, 3, 37, 3), torch.float32, device)
    f32 = dict(device=device, dtype=torch.float32)
    b = torch.randn(2, 14, **f32)
    whole = torch.empty(2, 37, **f32)
    kernels.sinkhorn_columns(queue, scores, first_rows, 3, INV_EPS, b, None, None, False, whole, math.log(37))
    top, sumexp, chunked = (torch.empty(2, 37, **f32) for _ in range(3))
    for g in range(2):
        for start in range(0, 11, 4):
            stop = min(start + 4, 11)
            kernels.sinkhorn_columns(queue[g:g + 1, start:stop].contiguous(), None, [0], 0, INV_EPS,
                                     b[g:g + 1, start:], top[g:g + 1], sumexp[g:g + 1], start > 0, None, 0.0)
    kernels.sinkhorn_columns(None, scores, first_rows, 3, INV_EPS, b[:, 11:], top, sumexp, True, chunked,
                             math.log(37))
    assert rel_err(chunked, whole) <= 1e-6


def check_codes_rows_sum_to_one_at_large_logits(kernels, device, dtype):
    """Row maxima of u reach |u| ≈ 1000 (scores × 30 / ε): rows still sum to 1 within fp32 rounding."""
    scores = (torch.randn(700, 65) * 50.0).to(device, dtype)
    potential = torch.randn(1, 65, device=device) * 100
    codes = torch.empty(1, 700, 65, device=device)
    kernels.sinkhorn_codes(scores, [0], 700, INV_EPS, potential, True, codes)
    expected = torch.empty_like(codes)
    ORACLE.sinkhorn_codes(scores, [0], 700, INV_EPS, potential, True, expected)
    assert torch.isfinite(codes).all()
    assert rel_err(codes, expected) <= logit_tolerance(scores.float(), 1 / INV_EPS)
    row_error = (codes.double().sum(dim=2) - 1).abs().max().item()
    assert row_error <= 1e-5, f"code rows sum to 1 within {row_error:.2e}"


def check_codes_in_place(kernels, device):
    """The codes may overwrite the fp32 scores they come from: the same numbers as a separate output."""
    scores = torch.randn(2 * 9, 70, device=device) * 5
    potential = torch.randn(2, 70, device=device)
    separate = torch.empty(2, 9, 70, device=device)
    kernels.sinkhorn_codes(scores, [0, 9], 9, INV_EPS, potential, True, separate)
    kernels.sinkhorn_codes(scores, [0, 9], 9, INV_EPS, potential, True, scores)
    assert torch.equal(scores.view(2, 9, 70), separate)


# (V, B, K, crops, first_image, images): chunks of images inside a batch, ragged against 8 crops per block
LOSS_CASES = [(2, 1, 1, [0, 1], 0, 1), (4, 5, 70, [0, 1], 0, 5), (3, 6, 33, [2], 2, 3), (5, 4, 7, [3, 0], 1, 2),
              (10, 3, 130, [0, 1], 0, 3), (9, 2, 40, [8, 1, 4], 1, 1)]
LOSS_DTYPES = [(torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.float32, torch.float16),
               (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)]


def loss_problem(case, score_dtype, device):
    n_crops, batch, cols, crops, first, images = case
    scores = (torch.randn(n_crops, images, cols) * 0.5).to(device, score_dtype)
    codes = torch.softmax(torch.randn(len(crops), batch, cols) * 3, dim=-1).to(device)
    return scores, codes


def check_swapped_loss(kernels, device, case, dtypes, with_grad=True):
    scores, codes = loss_problem(case, dtypes[0], device)
    n_crops, batch, cols, crops, first, images = case
    results = []
    for impl in (kernels, ORACLE):
        loss = torch.full((batch,), -1.0, device=device)
        grad = torch.empty(n_crops, images, cols, device=device, dtype=dtypes[1]) if with_grad else None
        impl.swapped_loss(scores, codes, crops, first, INV_TAU, 1 / (len(crops) * (n_crops - 1) * batch), loss, grad)
        results.append((loss, grad))
    (loss, grad), (ref_loss, ref_grad) = results
    assert torch.equal(loss[:first], ref_loss[:first]) and torch.equal(loss[first + images:], ref_loss[first + images:])
    assert rel_err(loss, ref_loss) <= 1e-5
    if with_grad:
        assert grad.dtype == dtypes[1]
        assert rel_err(grad, ref_grad) <= (1e-5 if dtypes[1] == torch.float32 else 1e-2)


def check_swapped_loss_in_place(kernels, device):
    scores, codes = loss_problem((4, 5, 70, [0, 1], 0, 5), torch.float32, device)
    loss, loss_again = torch.empty(5, device=device), torch.empty(5, device=device)
    grad = torch.empty_like(scores)
    kernels.swapped_loss(scores, codes, [0, 1], 0, INV_TAU, 0.01, loss, grad)
    kernels.swapped_loss(scores, codes, [0, 1], 0, INV_TAU, 0.01, loss_again, scores)
    assert torch.equal(loss, loss_again) and torch.equal(scores, grad)


def check_scale_gradients(kernels, device):
    """Two jobs in one launch: a chunk-major (V·B, D) fp32 source into crop-major rows of another dtype,
    and a (K, D) source unchanged in order."""
    upstream = torch.tensor(0.37, device=device)
    for crops, batch, chunk in ((3, 7, 3), (2, 5, 5), (4, 1, 1), (2, 9, 4)):
        src = torch.randn(crops * batch, 6, device=device)
        dst = torch.empty(crops * batch, 6, device=device, dtype=torch.bfloat16)
        other_src = torch.randn(11, 6, device=device)
        other = torch.empty(11, 6, device=device, dtype=torch.float16)
        kernels.scale_gradients(upstream, 0.5, [(src, dst, crops, batch, chunk), (other_src, other, 1, 11, 11)])
        expected, expected_other = torch.empty_like(dst), torch.empty_like(other)
        ORACLE.scale_gradients(upstream, 0.5, [(src, expected, crops, batch, chunk),
                                               (other_src, expected_other, 1, 11, 11)])
        assert torch.equal(dst, expected) and torch.equal(other, expected_other)
    # the chunk-major order, spelled out for crops 2, batch 5, chunks of 2 images: images (0, 1), (2, 3), (4)
    src = torch.arange(10.0, device=device)[:, None]
    dst = torch.empty(10, 1, device=device)
    kernels.scale_gradients(torch.tensor(1.0, device=device), 1.0, [(src, dst, 2, 5, 2)])
    assert dst.flatten().tolist() == [0, 1, 4, 5, 8, 2, 3, 6, 7, 9]


def check_shift_queue(kernels, device, dtype):
    for length, batch, dim, crops in ((7, 3, 33, [1, 0]), (4, 4, 5, [2]), (3, 5, 40, [0, 2]), (150, 70, 3, [1])):
        queue = torch.randn(len(crops), length, dim).to(device, dtype)
        embeddings = torch.randn(3 * batch, dim).to(device, dtype)
        expected = queue.clone()
        ORACLE.shift_queue(expected, embeddings, crops, batch)
        kernels.shift_queue(queue, embeddings, crops, batch)
        assert torch.equal(queue, expected), (length, batch)


def check_non_finite_values_propagate(kernels, device, value):
    """A NaN or ±inf in one score row: NaN in everything that row reaches (DESIGN.md §2)."""
    queue, scores, first_rows = sinkhorn_problem((2, 3, 4, 20, 3), torch.float32, device, scale=1.0)
    scores[first_rows[1] + 2, 5] = value  # group 1, batch row 2
    f32 = dict(device=device, dtype=torch.float32)
    potential, rows = torch.empty(2, 20, **f32), torch.empty(2, 7, **f32)
    kernels.sinkhorn_columns(queue, scores, first_rows, 4, INV_EPS, None, None, None, False, potential, 3.0)
    # a column step reads its prototype's column only: NaN there; the next row step spreads it
    assert torch.isnan(potential[1, 5]) and torch.isfinite(potential[1, :5]).all() and torch.isfinite(potential[0]).all()
    kernels.sinkhorn_rows(queue, scores, first_rows, 4, INV_EPS, potential, rows)
    assert torch.isnan(rows[1]).all() and torch.isfinite(rows[0]).all()
    kernels.sinkhorn_rows(queue, scores, first_rows, 4, INV_EPS, torch.zeros(2, 20, **f32), rows)
    assert torch.isnan(rows[1, 5]) and torch.isfinite(rows[1, :5]).all() and torch.isfinite(rows[0]).all()
    codes = torch.empty(2, 4, 20, **f32)
    kernels.sinkhorn_codes(scores, first_rows, 4, INV_EPS, torch.zeros(2, 20, **f32), True, codes)
    assert torch.isnan(codes[1, 2]).all() and torch.isfinite(codes[1, :2]).all()
    loss_scores, codes = loss_problem((3, 4, 20, [0, 1], 0, 4), torch.float32, device)
    loss_scores[2, 1, 7] = value
    loss = torch.empty(4, **f32)
    kernels.swapped_loss(loss_scores, codes, [0, 1], 0, INV_TAU, 0.1, loss, None)
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2, 3]]).all()
