"""Each kernel of csrc/ run on the CPU, compiled by g++ against the execution-model emulation of
tests/cuda_emulation (one OS thread per CUDA thread, real barriers and warp shuffles), against its
transcription (cuda_kernel_oracle.py); the checks are shared with the GPU (cuda_kernel_cases.py).

This runs every kernel's indexing, masking, barriers and reductions without a GPU. It cannot show
what only hardware shows (memory ordering, speed): test_cuda_kernels.py runs the same checks on a
GPU, and compute-sanitizer there.
"""
import pytest
import torch

import cuda_kernel_cases as cases
from cuda_emulation import build as emulation
from swav_kernels.cuda.launchers import KernelLaunchers

# Skipped, with the reason, where the emulation cannot be built; where SWAV_KERNELS_REQUIRE_EMULATION=1
# (CI) the tests run anyway and fail on that reason.
pytestmark = pytest.mark.skipif(emulation.unavailable_reason() is not None and not emulation.required(),
                                reason=f"CUDA emulation cannot be built: {emulation.unavailable_reason()}")


@pytest.fixture(scope="module")
def kernels():
    return KernelLaunchers(emulation.build(), stream=None)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", cases.SINKHORN_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_sinkhorn_steps(kernels, dtype, shape, accumulate):
    cases.check_sinkhorn_steps(kernels, "cpu", dtype, shape, accumulate)


def test_column_outputs_are_optional(kernels):
    cases.check_column_outputs_are_optional(kernels, "cpu")


def test_accumulated_chunks_equal_one_pass(kernels):
    cases.check_accumulated_chunks_equal_one_pass(kernels, "cpu")


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_codes_rows_sum_to_one_at_large_logits(kernels, dtype):
    cases.check_codes_rows_sum_to_one_at_large_logits(kernels, "cpu", dtype)


def test_codes_in_place(kernels):
    cases.check_codes_in_place(kernels, "cpu")


@pytest.mark.parametrize("dtypes", cases.LOSS_DTYPES, ids=str)
@pytest.mark.parametrize("case", cases.LOSS_CASES, ids=str)
def test_swapped_loss(kernels, case, dtypes):
    cases.check_swapped_loss(kernels, "cpu", case, dtypes)


def test_swapped_loss_without_gradient_and_in_place(kernels):
    cases.check_swapped_loss(kernels, "cpu", cases.LOSS_CASES[1], (torch.float32, torch.float32), with_grad=False)
    cases.check_swapped_loss_in_place(kernels, "cpu")


def test_scale_gradients(kernels):
    cases.check_scale_gradients(kernels, "cpu")


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_shift_queue(kernels, dtype):
    cases.check_shift_queue(kernels, "cpu", dtype)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_propagate(kernels, value):
    cases.check_non_finite_values_propagate(kernels, "cpu", value)


def test_every_call_is_one_launch(kernels):
    kernels.module.emulated_launches()  # start from an empty log
    cases.check_codes_in_place(kernels, "cpu")
    cases.check_swapped_loss_in_place(kernels, "cpu")
    assert kernels.module.emulated_launches() == ["sinkhorn_codes_kernel"] * 2 + ["swapped_loss_kernel"] * 2
