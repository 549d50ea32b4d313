"""The CUDA backend on CPU tensors: its real orchestration (torch's CPU matmuls) with the kernels of
csrc/ run by the emulation of tests/cuda_emulation, registered under a name of its own."""
import pytest

from cuda_emulation import build as emulation
from swav_kernels import register_backend
from swav_kernels.cuda.backend import CudaBackend
from swav_kernels.cuda.launchers import KernelLaunchers
from swav_kernels.cuda.plans import Budget

# Skipped, with the reason, where the emulation cannot be built; where SWAV_KERNELS_REQUIRE_EMULATION=1
# (CI) the tests run anyway and fail on that reason.
requires_emulation = pytest.mark.skipif(emulation.unavailable_reason() is not None and not emulation.required(),
                                        reason=f"CUDA emulation cannot be built: {emulation.unavailable_reason()}")

# Budgets small enough that the test problems take every path. At K = 70 and V = 4: the queue's scores
# recomputed in chunks of 3 rows and loss chunks of one image ("1"), or chunks of 8 rows and of two
# images for fp32 inputs ("2").
BUDGETS = {"cuda_emu": Budget(), "cuda_emu_chunks1": Budget(queue_scores_bytes=256, chunk_bytes=3 * 70 * 4),
           "cuda_emu_chunks2": Budget(queue_scores_bytes=256, chunk_bytes=2300)}


def emulated_backend(name: str = "cuda_emu", budget: Budget | None = None) -> str:
    """Registers (again) the emulated CUDA backend as ``name`` and returns the name."""
    budget = BUDGETS.get(name, Budget()) if budget is None else budget
    backend = CudaBackend(KernelLaunchers(emulation.build(), stream=None), device_type="cpu", name=name, budget=budget)
    register_backend(name, lambda: backend)
    return name
