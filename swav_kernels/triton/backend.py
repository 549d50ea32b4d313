"""``backend="triton"``: the shared kernel backend on the Triton kernels."""
from ..kernel_backend import KernelBackend
from .kernels import TritonKernels


class TritonBackend(KernelBackend):
    """Fused Triton kernels for all three families; custom ops ``swav_kernels::triton_*``."""

    def __init__(self) -> None:
        super().__init__(TritonKernels())

    def shift_queue(self, queue, embeddings, crops, batch) -> None:
        """``Backend.shift_queue`` in one launch (``triton/queue_shift.py``)."""
        from .queue_shift import shift_queue

        if not (queue.is_contiguous() and embeddings.is_contiguous()) or len(crops) > 7:
            return super().shift_queue(queue, embeddings, crops, batch)
        shift_queue(queue, embeddings.detach(), crops, batch)


# Built (and its custom ops registered) when swav_kernels is imported, so that the first
# loss call inside a torch.compile trace only looks the backend up. Triton itself is
# imported when a kernel first runs.
TRITON_BACKEND = TritonBackend()
