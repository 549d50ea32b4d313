"""Every CUDA kernel run under the CPU emulation with AddressSanitizer (out-of-bounds
accesses on exactly sized buffers) and ThreadSanitizer (a missing __syncthreads shows as
a data race between the emulated threads of a block): the CPU-side counterparts of
compute-sanitizer's memcheck and racecheck.

Slow (a few minutes on two cores), so opt-in: set SWAV_KERNELS_SANITIZE=1.
"""
import os
import subprocess

import pytest

from cuda_emulation import build as emulation

pytestmark = [
    pytest.mark.skipif(os.environ.get("SWAV_KERNELS_SANITIZE") != "1",
                       reason="slow; set SWAV_KERNELS_SANITIZE=1 to run the sanitized emulation"),
    pytest.mark.skipif(emulation.unavailable_reason() is not None,
                       reason=f"CUDA emulation cannot be built: {emulation.unavailable_reason()}"),
]


@pytest.mark.parametrize("sanitizer", ["address", "thread"])
def test_kernels_are_clean_under_sanitizer(sanitizer):
    driver = emulation.build_sanitized(sanitizer)
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=1"}
    result = subprocess.run([str(driver)], capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Sanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.stdout.splitlines()[-1] == "all kernels ran"
