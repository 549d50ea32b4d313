"""Every Triton kernel compiles to a GPU binary for sm_80 and sm_90 with the tiles the rules pick:
shared memory within the target, no register spills (outside tiles.KNOWN_SPILLS), tensor-core
instructions in the matmul kernels (tests/triton_compile_check.py).

Triton compiles to PTX and cubin without a GPU, which catches what the interpreter cannot (type
errors in loop-carried values, unsupported ops, tiles that do not fit or spill)."""
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = pathlib.Path(__file__).with_name("triton_compile_check.py")


def _run(*args, timeout=1500):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_triton_kernels_compile_for_sm80_and_sm90():
    planned = _run("--list").stdout.splitlines()
    result = _run()
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == len(planned) >= 50
    assert "wgmma" in result.stdout and "mma ×" in result.stdout
