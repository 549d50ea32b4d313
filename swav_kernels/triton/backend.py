"""``backend="triton"``: the shared kernel backend on the Triton kernels."""
from ..kernel_backend import KernelBackend
from ..kernels import SinkhornRows
from .kernels import TritonKernels
from .launch import crops_fit


class TritonBackend(KernelBackend):
    """Fused Triton kernels for all three families; custom ops ``swav_kernels::triton_*``."""

    def __init__(self) -> None:
        super().__init__(TritonKernels())

    def _preparable(self, main, queue, spec) -> bool:
        """Whether a whole call can be one prepared plan: one process, T ≥ 1, contiguous inputs, the
        queue in the inputs' dtype, crops that pack into one argument."""
        return (spec.process_group is None and spec.sinkhorn_iterations >= 1 and main.is_contiguous()
                and (queue is None or (queue.is_contiguous() and queue.dtype == main.dtype))
                and crops_fit(spec.crops_for_assign))

    def prepare_embeddings_loss(self, embeddings, prototypes, queue, spec, with_grad):
        """``Backend.prepare_embeddings_loss``: a ``FusedLossPlan`` (every launch prepared once)."""
        if not (self._preparable(embeddings, queue, spec) and prototypes.is_contiguous()):
            return None
        from .prepared_loss import FusedLossPlan

        batch = embeddings.shape[0] // spec.n_crops
        rows = SinkhornRows(embeddings, queue, spec.crops_for_assign, batch, prototypes)
        self.kernels.check_fused_call(rows)
        return FusedLossPlan(embeddings, prototypes, queue, spec.n_crops, spec.crops_for_assign, spec.temperature,
                             spec.epsilon, spec.sinkhorn_iterations, with_grad)

    def prepare_scores_loss(self, scores, queue_scores, spec, with_grad):
        """``Backend.prepare_scores_loss``: a ``ScoresLossPlan``."""
        if not self._preparable(scores, queue_scores, spec):
            return None
        from .prepared_loss import ScoresLossPlan

        batch = scores.shape[0] // spec.n_crops
        self.kernels.check_scores_call(SinkhornRows(scores, queue_scores, spec.crops_for_assign, batch, None))
        return ScoresLossPlan(scores, queue_scores, spec.n_crops, spec.crops_for_assign, spec.temperature,
                              spec.epsilon, spec.sinkhorn_iterations, with_grad)

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
