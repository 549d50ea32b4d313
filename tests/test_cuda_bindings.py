"""The CUDA kernels' bindings on a machine without a GPU: the module builds and imports, and every
entry point rejects bad arguments before any launch; the backend says why it cannot run here."""
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

BAD_CALLS = [
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

@pytest.mark.parametrize("binding, valid, overrides, message", BAD_CALLS,
                         ids=[f"{b}-{'-'.join(o)}-{i}" for i, (b, _, o, _) in enumerate(BAD_CALLS)])
def test_bindings_reject_bad_arguments_before_launch(binding, valid, overrides, message):
    with pytest.raises(ValueError, match=message):
        getattr(extension.extension(), binding)(**{**valid, **overrides})


@pytest.mark.parametrize("binding, valid", [
    ("sinkhorn_columns", COLUMNS), ("sinkhorn_rows", ROWS), ("sinkhorn_codes", CODES), ("swapped_loss", LOSS),
    ("scale_gradients", SCALE), ("shift_queue", SHIFT),
])
@pytest.mark.skipif(torch.cuda.is_available() or (BUILT and extension.extension().device_count() > 0),
                    reason="launches with fake pointers; only safe where no GPU exists")
def test_valid_arguments_without_a_gpu_raise_runtime_error_naming_the_kernel(binding, valid):
    with pytest.raises(RuntimeError, match=f"CUDA error in kernel {binding}"):
        getattr(extension.extension(), binding)(**valid)


def test_module_constants():
    assert extension.extension().MAX_GROUPS == 64


def test_unavailable_reasons_say_why():
    from swav_kernels.cuda.backend import CUDA_BACKEND

    assert "not on cpu tensors" in CUDA_BACKEND.unavailable_reason(torch.device("cpu"), torch.float32)
    assert "no CUDA kernels for torch.float64" in CUDA_BACKEND.unavailable_reason(torch.device("cuda"), torch.float64)
    if not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in CUDA_BACKEND.unavailable_reason(torch.device("cuda"), torch.bfloat16)
        assert "no CUDA GPU is visible" in CUDA_BACKEND.unavailable_reason(torch.device("cpu"), torch.float16)


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
