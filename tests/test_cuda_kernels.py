"""Each CUDA kernel of csrc/ on the GPU against its transcription (cuda_kernel_oracle.py): the checks
of test_cuda_emulated_kernels.py (cuda_kernel_cases.py) on the compiled extension, plus bitwise
reproducibility. GPU only (marked ``gpu``; reported as skipped elsewhere). The ids name the shapes
that benchmarks/gpu_session.sh runs under compute-sanitizer (``ragged``: every kernel on shapes
ragged against its blocking)."""
import pytest
import torch

import cuda_kernel_cases as cases

pytestmark = pytest.mark.gpu
RAGGED = 1  # index of the ragged case in cases.SINKHORN_SHAPES and cases.LOSS_CASES


@pytest.fixture(scope="module")
def kernels():
    from swav_kernels.cuda import extension
    from swav_kernels.cuda.launchers import KernelLaunchers

    assert extension.unavailable_reason() is None, extension.unavailable_reason()  # a GPU is here: run, not skip
    return KernelLaunchers(extension.extension())


def _ids(values):
    return ["ragged" if i == RAGGED else f"case{i}" for i in range(len(values))]


@pytest.mark.parametrize("accumulate", [False, True], ids=["fresh", "accumulate"])
@pytest.mark.parametrize("shape", cases.SINKHORN_SHAPES, ids=_ids(cases.SINKHORN_SHAPES))
@pytest.mark.parametrize("dtype", cases.DTYPES, ids=["fp32", "fp16", "bf16"])
def test_sinkhorn_steps(kernels, dtype, shape, accumulate):
    cases.check_sinkhorn_steps(kernels, "cuda", dtype, shape, accumulate)


def test_column_outputs_are_optional_and_chunks_accumulate(kernels):
    cases.check_column_outputs_are_optional(kernels, "cuda")
    cases.check_accumulated_chunks_equal_one_pass(kernels, "cuda")


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=["fp32", "fp16", "bf16"])
def test_codes_rows_sum_to_one_at_large_logits(kernels, dtype):
    cases.check_codes_rows_sum_to_one_at_large_logits(kernels, "cuda", dtype)
    cases.check_codes_in_place(kernels, "cuda")


@pytest.mark.parametrize("dtypes", cases.LOSS_DTYPES, ids=["fp32", "fp32-bf16", "fp32-fp16", "bf16", "fp16"])
@pytest.mark.parametrize("case", cases.LOSS_CASES, ids=_ids(cases.LOSS_CASES))
def test_swapped_loss(kernels, case, dtypes):
    cases.check_swapped_loss(kernels, "cuda", case, dtypes)


def test_swapped_loss_without_gradient_and_in_place(kernels):
    cases.check_swapped_loss(kernels, "cuda", cases.LOSS_CASES[RAGGED], (torch.float32, torch.float32), False)
    cases.check_swapped_loss_in_place(kernels, "cuda")


def test_ragged_scale_gradients(kernels):
    cases.check_scale_gradients(kernels, "cuda")


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=["fp32", "fp16", "bf16"])
def test_ragged_shift_queue(kernels, dtype):
    cases.check_shift_queue(kernels, "cuda", dtype)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_values_propagate(kernels, value):
    cases.check_non_finite_values_propagate(kernels, "cuda", value)


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=["fp32", "fp16", "bf16"])
def test_every_kernel_is_bitwise_reproducible(kernels, dtype):
    """At sizes that fill the GPU (swav-1gpu's Sinkhorn: 2 × 4096 rows × 3000): no kernel splits a
    reduction across blocks, so nothing depends on scheduling."""
    queue, scores, first_rows = cases.sinkhorn_problem((2, 3840, 256, 3000, 8), dtype, "cuda", scale=1.0)
    b = torch.randn(2, 4096, device="cuda")
    loss_scores = (torch.randn(8, 256, 3000, device="cuda") * 3).to(dtype)
    codes = torch.softmax(torch.randn(2, 256, 3000, device="cuda") * 3, dim=-1)

    def run():
        f32 = dict(device="cuda", dtype=torch.float32)
        potential, rows = torch.empty(2, 3000, **f32), torch.empty(2, 4096, **f32)
        kernels.sinkhorn_columns(queue, scores, first_rows, 256, cases.INV_EPS, b, None, None, False, potential, 8.0)
        kernels.sinkhorn_rows(queue, scores, first_rows, 256, cases.INV_EPS, potential, rows)
        out = torch.empty(2, 256, 3000, **f32)
        kernels.sinkhorn_codes(scores, first_rows, 256, cases.INV_EPS, potential, True, out)
        loss, grad = torch.empty(256, **f32), torch.empty_like(loss_scores)
        kernels.swapped_loss(loss_scores, codes, [0, 1], 0, cases.INV_TAU, 1e-4, loss, grad)
        return potential, rows, out, loss, grad

    for a, b_ in zip(run(), run()):
        assert torch.equal(a, b_)
