"""Every CUDA kernel of csrc/ compiles with nvcc for sm_80 and sm_90 (the architectures the extension
is built for) without register spills or stack frames: ptxas's own report (``-Xptxas -v``). Needs
nvcc, not a GPU."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
UNITS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cu"))


@pytest.mark.skipif(NVCC is None, reason="no CUDA compiler on this machine")
@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("unit", UNITS)
def test_kernels_compile_without_spills(unit, arch, tmp_path):
    done = subprocess.run([NVCC, "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-I{ROOT / 'csrc'}",
                           f"-arch=sm_{arch}", "-Xptxas", "-v", "-c", str(ROOT / unit), "-o", str(tmp_path / "k.o")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr)
    entries = re.findall(r"Compiling entry function '([^']+)' for 'sm_(\d+)'", done.stderr)
    assert entries and len(frames) >= len(entries), done.stderr[-4000:]
    assert all(a == arch for _, a in entries)
    assert all(frame == ("0", "0", "0") for frame in frames), done.stderr[-4000:]


def test_every_kernel_unit_is_built_into_the_extension():
    listed = re.findall(r"csrc/\S+\.cu", (ROOT / "CMakeLists.txt").read_text())
    assert sorted(listed) == UNITS
