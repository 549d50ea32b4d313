"""The CUDA kernels' bindings and Python wrapper on a machine without a GPU: the module
builds and imports, and every entry point rejects bad arguments before any launch."""
import subprocess
import sys

import pytest
import torch

from swav_kernels import backend_status, swav_loss
from swav_kernels.cuda import extension

BUILT = extension.build_status().startswith("built")
# Module-level checks below must not touch the extension where it was not built (SWAV_KERNELS_BUILD_CUDA=0,
# no nvcc): the module is skipped with the build status as the reason, not failed at collection.
pytestmark = pytest.mark.skipif(not BUILT, reason=f"CUDA extension not built here ({extension.build_status()})")

P = 256  # a fake, suitably aligned device address: validation must reject before any use

SINKHORN_INIT = dict(x=P, groups=2, rows=5, cols=7, group_stride=35, row_stride=7, dtype="float32", inv_eps=20.0,
                     rows_per_block=8, col_max=2 * P, col_sum=3 * P, workspace=4 * P, workspace_floats=28, stream=0)
SINKHORN_STEP = dict(x=P, groups=2, rows=5, cols=7, group_stride=35, row_stride=7, dtype="bfloat16", inv_eps=20.0,
                     col_potential=2 * P, log_rows_total=1.6, normalize_rows=True, rows_per_block=8,
                     column_sums=3 * P, codes=0, codes_from_row=0, workspace=4 * P, workspace_floats=14, stream=0)
SCORES_LSE = dict(z=P, c=2 * P, rows=3, prototypes=5, dim=4, z_row_stride=4, c_row_stride=4, dtype="float16",
                  inv_tau=10.0, lse=3 * P, out=4 * P, key_splits=1, workspace=5 * P, workspace_floats=6, stream=0)
PROTOTYPE_GRAD = dict(z=P, c=2 * P, lse=3 * P, row_weight=4 * P, rows=3, prototypes=5, dim=4, z_row_stride=4,
                      c_row_stride=4, dtype="float32", inv_tau=10.0, grad=5 * P, key_splits=1, workspace=0,
                      workspace_floats=0, stream=0)
CE_FORWARD = dict(s=P, codes=2 * P, rows=6, cols=5, row_stride=5, batch=2, crops_for_assign=[0, 1],
                  dtype="float32", inv_tau=10.0, lse=3 * P, cross=4 * P, stream=0)
CE_BACKWARD = dict(s=P, codes=2 * P, lse=3 * P, row_weight=6 * P, scale=4 * P, rows=6, cols=5, row_stride=5, batch=2,
                   crops_for_assign=[0, 1], dtype="float16", inv_tau=10.0, grad=5 * P, stream=0)
COLUMNS = dict(queue=P, queue_rows=3, batch=2 * P, batch_rows=2, batch_first_rows=[0, 2], cols=7, dtype="float32",
               inv_eps=20.0, row_potential=3 * P, potential_stride=5, column_max=4 * P, column_sumexp=5 * P,
               accumulate=True, column_potential=6 * P, log_cols=1.9, stream=0)
ROWS = dict(queue=0, queue_rows=0, batch=2 * P, batch_rows=2, batch_first_rows=[4], cols=7, dtype="bfloat16",
            inv_eps=20.0, column_potential=3 * P, row_potential=4 * P, potential_stride=2, stream=0)
CODES = dict(batch=P, batch_rows=3, batch_first_rows=[0, 3], cols=5, dtype="float16", inv_eps=20.0,
             column_potential=2 * P, normalize_rows=True, codes=3 * P, stream=0)
LOSS = dict(scores=P, scores_dtype="float32", scores_crop_stride=2, codes=2 * P, crops_for_assign=[0, 1], n_crops=3,
            batch=4, first_image=1, images=2, cols=5, inv_tau=10.0, loss_scale=0.1, loss=3 * P, grad=4 * P,
            grad_dtype="bfloat16", grad_crop_stride=2, stream=0)
SCALE = dict(upstream=P, coef=0.5, jobs=[(2 * P, "float32", 3 * P, "bfloat16", 6, 4, 3, 2, 1)], stream=0)
SHIFT = dict(queue=P, length=5, dim=3, embeddings=2 * P, batch=2, crops=[1, 0], dtype="float16", stream=0)

NEW_BAD_CALLS = [
    ("sinkhorn_columns", COLUMNS, dict(queue=P + 2), "queue must be aligned to 4 bytes"),
    ("sinkhorn_columns", COLUMNS, dict(batch=0), "batch must be a non-null device pointer"),
    ("sinkhorn_columns", COLUMNS, dict(batch_first_rows=[]), r"batch_first_rows must hold one entry per group"),
    ("sinkhorn_columns", COLUMNS, dict(batch_first_rows=[0] * 65), r"\(1 to 64\), got 65"),
    ("sinkhorn_columns", COLUMNS, dict(batch_first_rows=[0, -1]), "batch_first_rows entries must be >= 0, got -1"),
    ("sinkhorn_columns", COLUMNS, dict(queue_rows=0, batch_rows=0), "queue_rows \\+ batch_rows must be >= 1"),
    ("sinkhorn_columns", COLUMNS, dict(cols=0), r"cols must be in \[1, "),
    ("sinkhorn_columns", COLUMNS, dict(dtype="float64"), "dtype must be 'float32', 'float16' or 'bfloat16'"),
    ("sinkhorn_columns", COLUMNS, dict(inv_eps=0.0), "inv_eps must be finite and > 0"),
    ("sinkhorn_columns", COLUMNS, dict(log_cols=float("nan")), "log_cols must be finite"),
    ("sinkhorn_columns", COLUMNS, dict(potential_stride=4), "potential_stride must be >= queue_rows \\+ batch_rows"),
    ("sinkhorn_columns", COLUMNS, dict(column_sumexp=0), "column_max and column_sumexp must be given together"),
    ("sinkhorn_columns", COLUMNS, dict(column_max=0, column_sumexp=0), "accumulate needs column_max"),
    ("sinkhorn_columns", COLUMNS, dict(column_max=0, column_sumexp=0, accumulate=False, column_potential=0),
     "at least one of column_max and column_potential must be given"),
    ("sinkhorn_columns", COLUMNS, dict(row_potential=3 * P + 2), "row_potential must be aligned to 4 bytes"),
    ("sinkhorn_rows", ROWS, dict(batch=2 * P + 1), "batch must be aligned to 2 bytes"),
    ("sinkhorn_rows", ROWS, dict(column_potential=0), "column_potential must be a non-null device pointer"),
    ("sinkhorn_rows", ROWS, dict(row_potential=0), "row_potential must be a non-null device pointer"),
    ("sinkhorn_rows", ROWS, dict(batch_first_rows=[4, 6], potential_stride=1), "potential_stride must be >= queue_rows"),
    ("sinkhorn_rows", ROWS, dict(queue_rows=2), "queue must be a non-null device pointer"),
    ("sinkhorn_codes", CODES, dict(batch_rows=0), r"batch_rows must be in \[1, "),
    ("sinkhorn_codes", CODES, dict(codes=3 * P + 2), "codes must be aligned to 4 bytes"),
    ("sinkhorn_codes", CODES, dict(codes=P), "codes may overwrite the batch rows only when they are float32"),
    ("sinkhorn_codes", CODES, dict(codes=P, dtype="float32", batch_first_rows=[0, 2]),
     r"only when batch_first_rows\[g\] = g \* batch_rows"),
    ("swapped_loss", LOSS, dict(scores=0), "scores must be a non-null device pointer"),
    ("swapped_loss", LOSS, dict(scores_dtype="int8"), "scores_dtype must be 'float32'"),
    ("swapped_loss", LOSS, dict(grad_dtype="half"), "grad_dtype must be 'float32'"),
    ("swapped_loss", LOSS, dict(n_crops=1), r"n_crops must be in \[2, "),
    ("swapped_loss", LOSS, dict(images=5), r"images must be in \[1, 4\], got 5"),
    ("swapped_loss", LOSS, dict(first_image=3), r"first_image must be in \[0, 2\], got 3"),
    ("swapped_loss", LOSS, dict(scores_crop_stride=1), "scores_crop_stride must be >= images, got 1"),
    ("swapped_loss", LOSS, dict(grad_crop_stride=1), "grad_crop_stride must be >= images, got 1"),
    ("swapped_loss", LOSS, dict(crops_for_assign=[]), "crops_for_assign must hold 1 to 64 crops, got 0"),
    ("swapped_loss", LOSS, dict(crops_for_assign=[0, 3]), r"crops_for_assign entry must be in \[0, 2\], got 3"),
    ("swapped_loss", LOSS, dict(inv_tau=-1.0), "inv_tau must be finite and > 0"),
    ("swapped_loss", LOSS, dict(loss_scale=float("inf")), "loss_scale must be finite"),
    ("swapped_loss", LOSS, dict(loss=0), "loss must be a non-null device pointer"),
    ("swapped_loss", LOSS, dict(grad=4 * P + 1), "grad must be aligned to 2 bytes"),
    ("swapped_loss", LOSS, dict(grad=P), "grad may overwrite the scores only with their dtype and crop stride"),
    ("scale_gradients", SCALE, dict(upstream=0), "upstream must be a non-null device pointer"),
    ("scale_gradients", SCALE, dict(coef=float("nan")), "coef must be finite"),
    ("scale_gradients", SCALE, dict(jobs=[]), "jobs must hold 1 to 2 entries, got 0"),
    ("scale_gradients", SCALE, dict(jobs=SCALE["jobs"] * 3), "jobs must hold 1 to 2 entries, got 3"),
    ("scale_gradients", SCALE, dict(jobs=[(2 * P, "float32", 2 * P, "float32", 6, 4, 3, 2, 1)]), "dst must not be src"),
    ("scale_gradients", SCALE, dict(jobs=[(2 * P, "float32", 3 * P, "bfloat16", 6, 4, 4, 2, 1)]),
     "rows must be crops \\* batch"),
    ("scale_gradients", SCALE, dict(jobs=[(2 * P, "float32", 3 * P, "bfloat16", 6, 4, 3, 2, 3)]),
     r"chunk must be in \[1, 2\], got 3"),
    ("scale_gradients", SCALE, dict(jobs=[(2 * P, "double", 3 * P, "bfloat16", 6, 4, 3, 2, 1)]), "src_dtype must be"),
    ("shift_queue", SHIFT, dict(queue=P + 1), "queue must be aligned to 2 bytes"),
    ("shift_queue", SHIFT, dict(embeddings=0), "embeddings must be a non-null device pointer"),
    ("shift_queue", SHIFT, dict(length=0), r"length must be in \[1, "),
    ("shift_queue", SHIFT, dict(batch=0), r"batch must be in \[1, "),
    ("shift_queue", SHIFT, dict(crops=[]), "crops must hold 1 to 64 entries, got 0"),
    ("shift_queue", SHIFT, dict(crops=[-1]), r"crops entry must be in \[0, "),
]

BAD_CALLS = [
    # (binding, valid arguments, overrides, expected message)
    ("sinkhorn_column_init", SINKHORN_INIT, dict(x=0), "x must be a non-null device pointer"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(x=P + 2), "x must be aligned to 4 bytes"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(groups=0), r"groups must be in \[1, 65535\], got 0"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(groups=65536), r"groups must be in \[1, 65535\]"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(rows=0), r"rows must be in \[1, "),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(cols=-3), r"cols must be in \[1, "),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(row_stride=6), "row_stride must be >= cols, got 6"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(group_stride=34), r"group_stride must be >= rows \* row_stride"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(dtype="float64"),
     "dtype must be 'float32', 'float16' or 'bfloat16', got 'float64'"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(inv_eps=float("nan")), "inv_eps must be finite and > 0"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(inv_eps=0.0), "inv_eps must be finite and > 0"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(rows_per_block=0), r"rows_per_block must be in \[1, 64\]"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(rows_per_block=65), r"rows_per_block must be in \[1, 64\]"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(col_max=0), "col_max must be a non-null device pointer"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(col_sum=P + 1), "col_sum must be aligned to 4 bytes"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(workspace_floats=27), "workspace must hold at least 28 float32"),
    ("sinkhorn_column_init", SINKHORN_INIT, dict(workspace=0), "workspace must be a non-null device pointer"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(x=P + 1), "x must be aligned to 2 bytes"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(dtype="half"), "dtype must be 'float32', 'float16' or 'bfloat16'"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(col_potential=0), "col_potential must be a non-null device pointer"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(log_rows_total=float("inf")), "log_rows_total must be finite"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(inv_eps=-1.0), "inv_eps must be finite and > 0"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(column_sums=0),
     "at least one of column_sums and codes must be requested"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(codes=5 * P, codes_from_row=5), r"codes_from_row must be in \[0, 4\]"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(codes=5 * P, codes_from_row=-1), r"codes_from_row must be in \[0, 4\]"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(codes=5 * P + 2), "codes must be aligned to 4 bytes"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(workspace_floats=13), "workspace must hold at least 14 float32"),
    ("sinkhorn_row_step", SINKHORN_STEP, dict(rows_per_block=100), r"rows_per_block must be in \[1, 64\]"),
    ("scores_logsumexp", SCORES_LSE, dict(z=0), "z must be a non-null device pointer"),
    ("scores_logsumexp", SCORES_LSE, dict(c=2 * P + 1), "c must be aligned to 2 bytes"),
    ("scores_logsumexp", SCORES_LSE, dict(rows=0), r"rows must be in \[1, "),
    ("scores_logsumexp", SCORES_LSE, dict(prototypes=0), r"prototypes must be in \[1, "),
    ("scores_logsumexp", SCORES_LSE, dict(dim=0), r"dim must be in \[1, "),
    ("scores_logsumexp", SCORES_LSE, dict(z_row_stride=3), "z_row_stride must be >= dim, got 3"),
    ("scores_logsumexp", SCORES_LSE, dict(c_row_stride=2), "c_row_stride must be >= dim, got 2"),
    ("scores_logsumexp", SCORES_LSE, dict(dtype="int8"), "dtype must be 'float32', 'float16' or 'bfloat16'"),
    ("scores_logsumexp", SCORES_LSE, dict(inv_tau=-10.0), "inv_tau must be finite and > 0"),
    ("scores_logsumexp", SCORES_LSE, dict(key_splits=0), r"key_splits must be in \[1, 65535\]"),
    ("scores_logsumexp", SCORES_LSE, dict(key_splits=65536), r"key_splits must be in \[1, 65535\]"),
    ("scores_logsumexp", SCORES_LSE, dict(lse=0), "lse must be a non-null device pointer"),
    ("scores_logsumexp", SCORES_LSE, dict(out=4 * P + 2), "out must be aligned to 4 bytes"),
    ("scores_logsumexp", SCORES_LSE, dict(workspace_floats=5), "workspace must hold at least 6 float32"),
    ("scores_logsumexp", SCORES_LSE, dict(key_splits=2, workspace_floats=35),
     "workspace must hold at least 36 float32"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(lse=0), "lse must be a non-null device pointer"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(row_weight=0), "row_weight must be a non-null device pointer"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(grad=0), "grad must be a non-null device pointer"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(z=P + 2), "z must be aligned to 4 bytes"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(dim=5), "z_row_stride must be >= dim, got 4"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(inv_tau=float("inf")), "inv_tau must be finite and > 0"),
    ("softmax_prototype_grad", PROTOTYPE_GRAD, dict(key_splits=2), "workspace must hold at least 40 float32"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(s=0), "s must be a non-null device pointer"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(codes=2 * P + 2), "codes must be aligned to 4 bytes"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(rows=5), "rows must be a multiple of batch"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(batch=0), r"batch must be in \[1, 6\]"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(cols=0), r"cols must be in \[1, "),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(row_stride=4), "row_stride must be >= cols, got 4"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(crops_for_assign=[]), "crops_for_assign must hold 1 to 64"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(crops_for_assign=[0] * 65), "must hold 1 to 64 crops, got 65"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(crops_for_assign=[0, 3]),
     r"crops_for_assign entry must be in \[0, 2\], got 3"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(dtype="float64"), "dtype must be"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(inv_tau=0.0), "inv_tau must be finite and > 0"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(lse=0), "lse must be a non-null device pointer"),
    ("scores_cross_entropy_forward", CE_FORWARD, dict(cross=0), "cross must be a non-null device pointer"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(scale=0), "scale must be a non-null device pointer"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(lse=3 * P + 1), "lse must be aligned to 4 bytes"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(row_weight=0), "row_weight must be a non-null device pointer"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(grad=0), "grad must be a non-null device pointer"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(grad=5 * P + 1), "grad must be aligned to 2 bytes"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(crops_for_assign=[-1]), r"entry must be in \[0, 2\], got -1"),
    ("scores_cross_entropy_backward", CE_BACKWARD, dict(batch=7), r"batch must be in \[1, 6\], got 7"),
]

BAD_CALLS += NEW_BAD_CALLS


@pytest.mark.parametrize("binding, valid, overrides, message", BAD_CALLS,
                         ids=[f"{b}-{'-'.join(o)}-{i}" for i, (b, _, o, _) in enumerate(BAD_CALLS)])
def test_bindings_reject_bad_arguments_before_launch(binding, valid, overrides, message):
    with pytest.raises(ValueError, match=message):
        getattr(extension.extension(), binding)(**{**valid, **overrides})


@pytest.mark.parametrize("binding, valid", [
    ("sinkhorn_column_init", SINKHORN_INIT), ("sinkhorn_row_step", SINKHORN_STEP),
    ("scores_logsumexp", SCORES_LSE), ("softmax_prototype_grad", PROTOTYPE_GRAD),
    ("scores_cross_entropy_forward", CE_FORWARD), ("scores_cross_entropy_backward", CE_BACKWARD),
    ("sinkhorn_columns", COLUMNS), ("sinkhorn_rows", ROWS), ("sinkhorn_codes", CODES), ("swapped_loss", LOSS),
    ("scale_gradients", SCALE), ("shift_queue", SHIFT),
])
@pytest.mark.skipif(torch.cuda.is_available() or (BUILT and extension.extension().device_count() > 0),
                    reason="launches with fake pointers; only safe where no GPU exists")
def test_valid_arguments_without_a_gpu_raise_runtime_error_naming_the_kernel(binding, valid):
    with pytest.raises(RuntimeError, match=f"CUDA error in kernel {binding}"):
        getattr(extension.extension(), binding)(**valid)


def test_workspace_sizes():
    ext = extension.extension()
    assert ext.sinkhorn_column_init_workspace(groups=2, rows=5, cols=7, rows_per_block=8) == 2 * 2 * 1 * 7
    assert ext.sinkhorn_column_init_workspace(groups=3, rows=100, cols=11, rows_per_block=16) == 2 * 3 * 7 * 11
    assert ext.sinkhorn_row_step_workspace(groups=3, rows=100, cols=11, rows_per_block=16,
                                           want_column_sums=True) == 3 * 7 * 11
    assert ext.sinkhorn_row_step_workspace(groups=3, rows=100, cols=11, rows_per_block=16,
                                           want_column_sums=False) == 0
    assert ext.scores_logsumexp_workspace(rows=3, dim=4, key_splits=1, with_output=True) == 6
    assert ext.scores_logsumexp_workspace(rows=3, dim=4, key_splits=2, with_output=True) == 12 + 24
    assert ext.scores_logsumexp_workspace(rows=3, dim=4, key_splits=2, with_output=False) == 12
    assert ext.softmax_prototype_grad_workspace(prototypes=5, dim=4, key_splits=1) == 0
    assert ext.softmax_prototype_grad_workspace(prototypes=5, dim=4, key_splits=3) == 60
    with pytest.raises(ValueError, match=r"rows_per_block must be in \[1, 64\]"):
        ext.sinkhorn_column_init_workspace(groups=1, rows=1, cols=1, rows_per_block=0)
    with pytest.raises(ValueError, match=r"key_splits must be in \[1, 65535\]"):
        ext.scores_logsumexp_workspace(rows=1, dim=1, key_splits=0, with_output=False)
    assert (ext.SCORE_TILE_ROWS, ext.SCORE_TILE_KEYS, ext.SCORE_TILE_SLICE) == (64, 64, 64)
    assert ext.SINKHORN_MAX_ROWS_PER_BLOCK == 64 and ext.MAX_ASSIGN_CROPS == 64


# ---- the Python wrapper -------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernels():
    from swav_kernels.cuda.kernels import CudaKernels

    return CudaKernels()


def _calls(kernels, x, z, s):
    """One call per primitive with the given tensors as the first argument, the rest valid-looking."""
    codes = torch.zeros(2, 2, 5)
    return [
        lambda: kernels.sinkhorn_column_init(x, 20.0),
        lambda: kernels.sinkhorn_row_step(x, 20.0, torch.zeros(2, 5), 1.0, True, True, -1),
        lambda: kernels.scores_logsumexp(z, z, 10.0, True),
        lambda: kernels.softmax_prototype_grad(z, z, torch.zeros(6), torch.ones(6), 10.0),
        lambda: kernels.scores_cross_entropy_forward(s, codes, [0, 1], 10.0),
        lambda: kernels.scores_cross_entropy_backward(s, codes, torch.zeros(6), torch.ones(6), [0, 1], 10.0,
                                                      torch.tensor(1.0)),
    ]


@pytest.mark.parametrize("index", range(6))
def test_wrapper_rejects_cpu_tensors(kernels, index):
    call = _calls(kernels, torch.zeros(2, 3, 5), torch.zeros(6, 5), torch.zeros(6, 5))[index]
    with pytest.raises(ValueError, match=r"must be a CUDA tensor, got device cpu"):
        call()


@pytest.mark.parametrize("index", range(6))
def test_wrapper_rejects_float64(kernels, index):
    f64 = dict(dtype=torch.float64)
    call = _calls(kernels, torch.zeros(2, 3, 5, **f64), torch.zeros(6, 5, **f64), torch.zeros(6, 5, **f64))[index]
    with pytest.raises(TypeError, match=r"must be float32, float16 or bfloat16 for the CUDA kernels, got torch.float64"):
        call()


@pytest.mark.parametrize("index", range(6))
def test_wrapper_rejects_non_contiguous_tensors(kernels, index):
    x, z = torch.zeros(2, 5, 3).transpose(1, 2), torch.zeros(5, 6).t()
    call = _calls(kernels, x, z, z)[index]
    with pytest.raises(ValueError, match=r"must be contiguous \(call .contiguous\(\)\)"):
        call()


def test_wrapper_rejects_wrong_ranks_and_kinds(kernels):
    with pytest.raises(ValueError, match=r"x must be 3-D, got shape \(3, 5\)"):
        kernels.sinkhorn_column_init(torch.zeros(3, 5), 20.0)
    with pytest.raises(TypeError, match="z must be a torch.Tensor, got list"):
        kernels.scores_logsumexp([[1.0]], torch.zeros(1, 1), 10.0, False)
    from swav_kernels.kernel_checks import check_input

    with pytest.raises(TypeError, match="codes must be torch.float32, got torch.float16"):
        check_input("codes", torch.zeros(1, 2, 3, dtype=torch.float16), 3, torch.float32)


def test_unavailable_reasons_say_why(kernels):
    assert "not on cpu tensors" in kernels.unavailable_reason(torch.device("cpu"), torch.float32)
    assert "no CUDA kernels for torch.float64" in kernels.unavailable_reason(torch.device("cuda"), torch.float64)
    if not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in kernels.unavailable_reason(torch.device("cuda"), torch.bfloat16)
        assert "no CUDA GPU is visible" in kernels.unavailable_reason(torch.device("cpu"), torch.float16)


def test_cuda_backend_is_registered_and_explains_itself():
    reason = backend_status("cpu")["cuda"]
    assert reason is not None and "CUDA tensors" in reason
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run torch.float32 tensors on cpu"):
        swav_loss(torch.randn(4, 3), nmb_crops=2, backend="cuda")
    from swav_kernels.registry import _INSTANCES

    backend = _INSTANCES["cuda"]
    assert backend.name == "cuda"
    assert hasattr(torch.ops.swav_kernels, "cuda_embeddings_loss")
    assert hasattr(torch.ops.swav_kernels, "cuda_scores_loss")


def test_info_reports_the_cuda_backend():
    out = subprocess.run([sys.executable, "-m", "swav_kernels.info"], capture_output=True, text=True, check=True)
    cuda_lines = [line for line in out.stdout.splitlines() if line.strip().startswith("cuda ")]
    assert cuda_lines, out.stdout
    if not torch.cuda.is_available():
        assert all("unavailable:" in line and "CUDA tensors" in line for line in cuda_lines), cuda_lines
