"""Every CUDA kernel run under the CPU emulation with AddressSanitizer (out-of-bounds
accesses on exactly sized buffers) and ThreadSanitizer (a missing __syncthreads shows as
a data race between the emulated threads of a block): the CPU-side counterparts of
compute-sanitizer's memcheck and racecheck.

The sanitized runs of every kernel are slow (minutes on two cores), so opt-in: set
SWAV_KERNELS_SANITIZE=1. Every run checks, in seconds, that the sanitizer driver still compiles
against csrc/ and that ThreadSanitizer reports a kernel copy with a barrier removed.
"""
import os
import subprocess

import pytest

from cuda_emulation import build as emulation

# Skipped, with the reason, where the emulation cannot be built; where SWAV_KERNELS_REQUIRE_EMULATION=1
# (CI) the tests run anyway and fail on that reason.
pytestmark = pytest.mark.skipif(emulation.unavailable_reason() is not None and not emulation.required(),
                                reason=f"CUDA emulation cannot be built: {emulation.unavailable_reason()}")
opt_in = pytest.mark.skipif(os.environ.get("SWAV_KERNELS_SANITIZE") != "1",
                            reason="slow; set SWAV_KERNELS_SANITIZE=1 to run the sanitized emulation")


def test_sanitizer_driver_compiles_against_csrc():
    result = emulation.check_driver_syntax()
    assert result.returncode == 0, result.stderr[-4000:]


@opt_in
@pytest.mark.parametrize("sanitizer", ["address", "thread"])
def test_kernels_are_clean_under_sanitizer(sanitizer):
    driver = emulation.build_sanitized(sanitizer)
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=1"}
    result = subprocess.run([str(driver)], capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Sanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.stdout.splitlines()[-1] == "all kernels ran"


COLUMN_STEP_UNITS = ["sinkhorn/columns.cu", "common/launch.cpp"]


def test_thread_sanitizer_reports_a_removed_barrier():
    """The check above is only worth its time if ThreadSanitizer sees a missing barrier through the
    emulation: sinkhorn_columns as it is runs clean; a copy without its __syncthreads (between the
    warps' shared-memory writes and warp 0's reads) is reported as a data race in that kernel."""
    driver = emulation.HERE / "race_driver.cpp"
    intact = emulation.build_sanitized_program("thread", driver, COLUMN_STEP_UNITS)
    broken = emulation.build_sanitized_program("thread", driver, COLUMN_STEP_UNITS,
                                               remove_first=("sinkhorn/columns.cu", "__syncthreads();"))
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=0"}
    clean = subprocess.run([str(intact)], capture_output=True, text=True, env=env, timeout=600)
    assert clean.returncode == 0 and "ThreadSanitizer" not in clean.stderr, clean.stderr[-4000:]
    racy = subprocess.run([str(broken)], capture_output=True, text=True, env=env, timeout=600)
    assert racy.returncode != 0, racy.stderr[-4000:]
    assert "WARNING: ThreadSanitizer: data race" in racy.stderr
    assert "sinkhorn_columns_kernel" in racy.stderr, racy.stderr[-4000:]
