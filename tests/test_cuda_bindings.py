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


@pytest.mark.parametrize("binding, valid, overrides, message", BAD_CALLS,
                         ids=[f"{b}-{'-'.join(o)}-{i}" for i, (b, _, o, _) in enumerate(BAD_CALLS)])
def test_bindings_reject_bad_arguments_before_launch(binding, valid, overrides, message):
    with pytest.raises(ValueError, match=message):
        getattr(extension.extension(), binding)(**{**valid, **overrides})


@pytest.mark.parametrize("binding, valid", [
    ("sinkhorn_column_init", SINKHORN_INIT), ("sinkhorn_row_step", SINKHORN_STEP),
    ("scores_logsumexp", SCORES_LSE), ("softmax_prototype_grad", PROTOTYPE_GRAD),
    ("scores_cross_entropy_forward", CE_FORWARD), ("scores_cross_entropy_backward", CE_BACKWARD),
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
