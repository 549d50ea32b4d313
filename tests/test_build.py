"""The CUDA extension: built wherever a CUDA compiler is, importable there, strict about arguments."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from swav_kernels.cuda import extension

NVCC_PRESENT = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
# Installed with SWAV_KERNELS_BUILD_CUDA=0: the build record says so (the variable need not be set for pytest).
CUDA_BUILD_DISABLED = (os.environ.get("SWAV_KERNELS_BUILD_CUDA") == "0"
                       or "SWAV_KERNELS_BUILD_CUDA=0" in extension.build_status())


def built() -> bool:
    return extension.build_status().startswith("built")


def test_package_imports_and_records_its_build():
    assert subprocess.run([sys.executable, "-c", "from swav_kernels import swav_loss"], check=False).returncode == 0
    status = extension.build_status()
    assert status.startswith(("built", "skipped")), status


@pytest.mark.skipif(not NVCC_PRESENT, reason="no CUDA compiler on this machine")
@pytest.mark.skipif(CUDA_BUILD_DISABLED, reason="installed with SWAV_KERNELS_BUILD_CUDA=0")
def test_extension_was_built_where_nvcc_exists():
    assert built(), extension.build_status()


@pytest.mark.skipif(not built(), reason=f"CUDA extension not built here ({extension.build_status()})")
class TestBuiltExtension:
    def test_imports_and_describes_itself(self):
        ext = extension.extension()
        assert ext.cuda_runtime_version() >= 12000
        assert ext.compiled_archs() in extension.build_status()
        assert ext.device_count() == torch.cuda.device_count()
