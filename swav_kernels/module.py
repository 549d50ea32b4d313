"""``SwAVLoss``: the loss as an ``nn.Module`` that can own the feature queue.

The queue follows facebookresearch/swav ``main_swav.py``: per assign crop it holds the
most recent embeddings of this rank (newest first); they are scored with the current
prototypes and prepended to the Sinkhorn rows once the queue is full; after each step
the queue shifts and the batch's assign-crop embeddings enter at the front.

No call waits for the device: how full the queue is is counted on the host (mirrored into
the ``queue_filled`` buffer for checkpoints while it fills), and the shift is done on the device
(one launch on the Triton backend) in a way a CUDA graph replays correctly. A step may be
captured in a CUDA graph once the queue is full (or without a queue); capturing while it still
fills raises, since replays would not advance the host's count.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .loss import swav_loss
from .registry import check_backend_name, resolve_backend
from .validation import check_crops_for_assign, check_iterations, check_n_crops, check_positive_float


class SwAVLoss(nn.Module):
    """SwAV loss module.

    Args:
        nmb_crops: crops per image (int V or list per resolution, e.g. ``[2, 6]``).
        crops_for_assign, temperature, epsilon, sinkhorn_iterations, process_group,
            backend: as in :func:`swav_kernels.swav_loss`.
        queue_length: queued embeddings per assign crop on this rank (0: no queue);
            facebookresearch/swav uses ``queue_length // world_size``.
        feat_dim: embedding dimension D, required with a queue (the queue is a buffer of
            shape ``(|A|, queue_length, D)`` saved in ``state_dict``).

    ``forward(embeddings (V·B, D), prototypes (K, D))`` or ``forward(scores (V·B, K))``
    returns the 0-d loss; the queue needs the embeddings form.
    """

    def __init__(
        self,
        nmb_crops: int | Sequence[int] = (2, 6),
        crops_for_assign: Sequence[int] = (0, 1),
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 0,
        feat_dim: int | None = None,
        process_group=None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.nmb_crops = list(nmb_crops) if isinstance(nmb_crops, Sequence) else int(nmb_crops)
        n_crops = check_n_crops(self.nmb_crops)
        self.crops_for_assign = check_crops_for_assign(crops_for_assign, n_crops)
        self.temperature = check_positive_float("temperature", temperature)
        self.epsilon = check_positive_float("epsilon", epsilon)
        self.sinkhorn_iterations = check_iterations("sinkhorn_iterations", sinkhorn_iterations)
        self.queue_length = check_iterations("queue_length", queue_length)
        self.process_group = process_group
        self.backend = check_backend_name(backend)  # a typo fails here, not at the first forward
        if self.queue_length:
            if feat_dim is None:
                raise ValueError("feat_dim is required when queue_length > 0 (the queue is (|A|, L, feat_dim))")
            feat_dim = check_iterations("feat_dim", feat_dim)
            self.register_buffer("queue", torch.zeros(len(self.crops_for_assign), self.queue_length, feat_dim))
            self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        else:
            self.queue = None
        self._filled = 0  # host copy of queue_filled: read without a device sync

    @property
    def queue_is_full(self) -> bool:
        """True once the queue holds ``queue_length`` rows and joins the Sinkhorn."""
        return self.queue is not None and self._filled >= self.queue_length

    def reset_queue(self) -> None:
        """Empty the queue (it is used again once refilled)."""
        if self.queue is not None:
            self.queue.zero_()
            self.queue_filled.zero_()
            self._filled = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.queue is not None:
            self._filled = int(self.queue_filled)  # once per load, not per step

    def forward(self, inputs: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        queue = None
        if self.queue is not None:
            if prototypes is None:
                raise ValueError(
                    "this SwAVLoss owns a queue of embeddings: call it as loss(embeddings, prototypes)"
                )
            if isinstance(inputs, torch.Tensor) and inputs.dim() == 2 and inputs.shape[1] != self.queue.shape[2]:
                raise ValueError(
                    f"embeddings have D={inputs.shape[1]} but the queue was built with feat_dim={self.queue.shape[2]}"
                )
            if self.queue_is_full:
                queue = self.queue
        loss = swav_loss(
            inputs,
            prototypes,
            nmb_crops=self.nmb_crops,
            crops_for_assign=self.crops_for_assign,
            temperature=self.temperature,
            epsilon=self.epsilon,
            sinkhorn_iterations=self.sinkhorn_iterations,
            queue=queue,
            process_group=self.process_group,
            backend=self.backend,
        )
        if self.queue is not None:
            self._enqueue(inputs if isinstance(inputs, torch.Tensor) else torch.cat(list(inputs)))
        return loss

    @torch.no_grad()
    def _enqueue(self, embeddings: torch.Tensor) -> None:
        """Shift the queue and put this batch's assign-crop embeddings at the front."""
        n_crops = check_n_crops(self.nmb_crops)
        batch = embeddings.shape[0] // n_crops
        if embeddings.device != self.queue.device:
            raise ValueError(f"SwAVLoss's queue is on {self.queue.device} but the embeddings are on {embeddings.device}; "
                             f"move the module to the embeddings' device first (loss_module.to({str(embeddings.device)!r}))")
        if not self.queue_is_full and embeddings.is_cuda and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("SwAVLoss: a step is being captured in a CUDA graph while the queue still fills; "
                               "capture once queue_is_full (replays cannot advance the host's fill count)")
        if embeddings.dtype != self.queue.dtype:  # hold the queue in the embeddings' dtype from now on
            self.queue = self.queue.to(embeddings.dtype)
        backend = resolve_backend(self.backend, embeddings.device, embeddings.dtype)
        backend.shift_queue(self.queue, embeddings.detach(), self.crops_for_assign, batch)
        if self._filled < self.queue_length:
            self._filled = min(self._filled + batch, self.queue_length)
            self.queue_filled.fill_(self._filled)
