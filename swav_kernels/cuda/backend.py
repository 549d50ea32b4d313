"""``backend="cuda"``: the shared kernel backend (swav_kernels.kernel_backend) on the CUDA
C++ kernels. Constructing it is cheap and never fails: without a GPU or without the
compiled extension it reports why through ``unavailable_reason``."""
from __future__ import annotations

from ..kernel_backend import KernelBackend
from .kernels import CudaKernels


class CudaBackend(KernelBackend):
    def __init__(self) -> None:
        super().__init__(CudaKernels())


# Built (and its custom ops registered) when swav_kernels is imported, so that the first
# loss call inside a torch.compile trace only looks the backend up.
CUDA_BACKEND = CudaBackend()
