"""The CUDA extension: built wherever a CUDA compiler is, importable there, strict about arguments."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from swav_kernels.cuda import extension

NVCC_PRESENT = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
CUDA_BUILD_DISABLED = os.environ.get("SWAV_KERNELS_BUILD_CUDA") == "0"


def built() -> bool:
    return extension.build_status().startswith("built")


def test_package_imports_and_records_its_build():
    assert subprocess.run([sys.executable, "-c", "from swav_kernels import swav_loss"], check=False).returncode == 0
    status = extension.build_status()
    assert status.startswith(("built", "skipped")), status


@pytest.mark.skipif(not NVCC_PRESENT or CUDA_BUILD_DISABLED, reason="no CUDA compiler on this machine")
def test_extension_was_built_where_nvcc_exists():
    assert built(), extension.build_status()


@pytest.mark.skipif(not built(), reason="CUDA extension not built here")
class TestBuiltExtension:
    def test_imports_and_describes_itself(self):
        ext = extension.extension()
        assert ext.cuda_runtime_version() >= 12000
        assert ext.compiled_archs() in extension.build_status()
        assert ext.device_count() == torch.cuda.device_count()

    @pytest.mark.parametrize(
        "args, message",
        [
            ((0, 8, 1, 1, 1, "float32", 1.0, 0), "x must be a non-null device pointer"),
            ((8, 0, 1, 1, 1, "float32", 1.0, 0), "out must be a non-null device pointer"),
            ((8, 8, -1, 1, 1, "float32", 1.0, 0), "rows must be in"),
            ((8, 8, 1, 0, 1, "float32", 1.0, 0), "cols must be >= 1"),
            ((8, 8, 1, 4, 2, "float32", 1.0, 0), "row_stride must be >= cols"),
            ((8, 8, 1, 1, 1, "int8", 1.0, 0), "dtype must be 'float32', 'float16' or 'bfloat16'"),
            ((8, 8, 1, 1, 1, "float32", float("nan"), 0), "scale must be finite"),
        ],
    )
    def test_rejects_bad_arguments_before_launch(self, args, message):
        with pytest.raises(ValueError, match=message):
            extension.extension().row_logsumexp(*args)


def test_python_wrapper_rejects_cpu_and_bad_tensors():
    from swav_kernels.cuda.row_logsumexp import row_logsumexp

    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        row_logsumexp(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        row_logsumexp([1.0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3001), (300, 33)])
def test_row_logsumexp_on_gpu(dtype, shape):
    from swav_kernels.cuda.row_logsumexp import row_logsumexp

    x = (torch.randn(*shape, device="cuda") * 3).to(dtype)
    out = row_logsumexp(x, scale=10.0)
    expected = torch.logsumexp(x.double() * 10.0, dim=1)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-4)
    strided = torch.zeros(shape[0], shape[1] + 5, device="cuda", dtype=dtype)
    strided[:, : shape[1]] = x
    assert torch.equal(row_logsumexp(strided[:, : shape[1]], scale=10.0), out)
