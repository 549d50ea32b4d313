"""``backend="cuda"``: the CUDA C++ kernels of csrc/ behind the backend interface. Constructing it
is cheap and never fails: without a GPU or without the compiled extension it reports why through
``unavailable_reason``."""
from __future__ import annotations

from .kernels import CudaKernels
from .legacy_backend import LegacyKernelBackend


class CudaBackend(LegacyKernelBackend):
    def __init__(self) -> None:
        super().__init__(CudaKernels())


# Built (and its custom ops registered) when swav_kernels is imported, so that the first
# loss call inside a torch.compile trace only looks the backend up.
CUDA_BACKEND = CudaBackend()
