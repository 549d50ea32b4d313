"""``KernelLaunchers``: each kernel of csrc/ (``contract.py``) as a method taking tensors; one call,
one launch on the current stream of the tensors' device.

No tensor checks here beyond what the bindings verify (pointers, ranges): the backend checks its
arguments once per call signature (``plans.py``) and builds the views these methods take. The
CPU emulation of tests/cuda_emulation plugs in as ``module`` with ``stream=None``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..kernel_checks import KERNEL_DTYPES


def current_stream_handle(device: torch.device) -> int:
    """PyTorch's current CUDA stream on ``device``, as the integer handle the bindings take (inside a
    CUDA-graph capture: the capturing stream)."""
    return torch.cuda.current_stream(device).cuda_stream


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class KernelLaunchers:
    """The kernels of ``module`` (``swav_kernels._C`` or the emulation) on tensors; ``stream`` maps a
    device to the stream handle to launch on (None: always 0, for the emulation)."""

    def __init__(self, module, stream: Callable[[torch.device], int] | None = current_stream_handle) -> None:
        self.module = module
        self._stream = stream

    def stream(self, device: torch.device) -> int:
        return 0 if self._stream is None else self._stream(device)

    # ---- family 2: Sinkhorn ------------------------------------------------------------------

    def sinkhorn_columns(self, queue, batch, first_rows: Sequence[int], batch_rows: int, inv_eps: float,
                         row_potential, column_max, column_sumexp, accumulate: bool, column_potential,
                         log_cols: float) -> None:
        some = queue if queue is not None else batch
        self.module.sinkhorn_columns(
            _ptr(queue), 0 if queue is None else queue.shape[1], _ptr(batch), batch_rows, list(first_rows),
            some.shape[-1], KERNEL_DTYPES[some.dtype], inv_eps, _ptr(row_potential),
            0 if row_potential is None else row_potential.stride(0), _ptr(column_max), _ptr(column_sumexp),
            accumulate, _ptr(column_potential), log_cols, self.stream(some.device))

    def sinkhorn_rows(self, queue, batch, first_rows: Sequence[int], batch_rows: int, inv_eps: float,
                      column_potential, row_potential) -> None:
        some = queue if queue is not None else batch
        self.module.sinkhorn_rows(
            _ptr(queue), 0 if queue is None else queue.shape[1], _ptr(batch), batch_rows, list(first_rows),
            some.shape[-1], KERNEL_DTYPES[some.dtype], inv_eps, column_potential.data_ptr(), row_potential.data_ptr(),
            row_potential.stride(0), self.stream(some.device))

    def sinkhorn_codes(self, batch, first_rows: Sequence[int], batch_rows: int, inv_eps: float, column_potential,
                       normalize_rows: bool, codes) -> None:
        self.module.sinkhorn_codes(
            batch.data_ptr(), batch_rows, list(first_rows), batch.shape[-1], KERNEL_DTYPES[batch.dtype], inv_eps,
            column_potential.data_ptr(), normalize_rows, codes.data_ptr(), self.stream(batch.device))

    # ---- families 1 and 3: the loss after the matmuls ----------------------------------------

    def swapped_loss(self, scores, codes, crops: Sequence[int], first_image: int, inv_tau: float,
                     loss_scale: float, loss, grad) -> None:
        n_crops, images, cols = scores.shape
        self.module.swapped_loss(
            scores.data_ptr(), KERNEL_DTYPES[scores.dtype], scores.stride(0) // cols, codes.data_ptr(), list(crops),
            n_crops, codes.shape[1], first_image, images, cols, inv_tau, loss_scale, loss.data_ptr(), _ptr(grad),
            KERNEL_DTYPES[(scores if grad is None else grad).dtype], 0 if grad is None else grad.stride(0) // cols,
            self.stream(scores.device))

    def scale_gradients(self, upstream, coef: float, jobs) -> None:
        self.module.scale_gradients(
            upstream.data_ptr(), coef,
            [(src.data_ptr(), KERNEL_DTYPES[src.dtype], dst.data_ptr(), KERNEL_DTYPES[dst.dtype], dst.shape[0],
              dst.shape[1], crops, batch, chunk) for src, dst, crops, batch, chunk in jobs],
            self.stream(upstream.device))

    def shift_queue(self, queue, embeddings, crops: Sequence[int], batch: int) -> None:
        groups, length, dim = queue.shape
        self.module.shift_queue(queue.data_ptr(), length, dim, embeddings.data_ptr(), batch, list(crops),
                                KERNEL_DTYPES[queue.dtype], self.stream(queue.device))
