"""One epoch of SwAV pre-training (facebookresearch/swav ``main_swav.py``'s ``train``).

Per iteration: set the scheduled learning rate, re-normalise the prototypes, embed all crops
(bf16 autocast when enabled), compute the SwAV loss with ``swav_kernels`` (queue from
``--epoch-queue-starts`` on), backpropagate, drop the prototypes' gradient during the first
``--freeze-prototypes-niters`` iterations, take the LARS step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..module import SwAVLoss
from .model import SwAVModel


@dataclass
class SwAVLosses:
    """The loss without a queue (epochs before ``--epoch-queue-starts``) and, when a queue
    is configured, the one that owns it (this rank's ``queue_length // world_size`` rows)."""

    plain: SwAVLoss
    queued: SwAVLoss | None = None

    def for_epoch(self, epoch: int, epoch_queue_starts: int) -> SwAVLoss:
        return self.queued if self.queued is not None and epoch >= epoch_queue_starts else self.plain


class LossTimer:
    """Wall time of the loss: its forward, plus its backward up to the moment the gradient
    of the embeddings exists (a tensor hook). On CUDA it synchronises at those points."""

    def __init__(self, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.seconds = 0.0
        self._started = 0.0

    def _now(self) -> float:
        self.sync()
        return time.perf_counter()

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        self.seconds += self._now() - self._started

    def watch_backward(self, embeddings: torch.Tensor) -> None:
        """Call before ``backward()``: times from now until ``embeddings.grad`` is computed."""
        self.start()

        def mark(grad):
            self.stop()
            return grad

        embeddings.register_hook(mark)


@dataclass
class EpochResult:
    rows: list = field(default_factory=list)  # one dict per iteration (report.LOG_FIELDS)

    @property
    def mean_loss(self) -> float:
        return sum(row["loss"] for row in self.rows) / max(len(self.rows), 1)


def train_one_epoch(
    model: SwAVModel,
    network: torch.nn.Module,
    losses: SwAVLosses,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loader,
    epoch: int,
    args,
    device: torch.device,
    world_size: int = 1,
    progress: bool | None = None,
) -> EpochResult:
    """Train ``network`` (``model`` itself, or its DDP wrapper) for one pass over ``loader``.

    ``loader`` yields ``(crops, labels)`` with crops a list of V ``(B, 3, s, s)`` batches;
    labels are ignored. Returns the per-iteration log rows.
    """
    from tqdm.auto import tqdm

    loss_fn = losses.for_epoch(epoch, args.epoch_queue_starts)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    network.train()
    result = EpochResult()
    # progress None: tqdm decides (a bar only on a terminal)
    disable = None if progress is None else not progress
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=disable, leave=False)
    iters_per_epoch = len(loader)
    tick = time.perf_counter()
    for step, (crops, _labels) in enumerate(bar):
        iteration = epoch * iters_per_epoch + step
        timer = LossTimer(device)
        model.normalize_prototypes()
        crops = [crop.to(device, non_blocking=True, memory_format=memory_format) for crop in crops]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.amp):
            embeddings = network(crops)
        queue_in_use = int(loss_fn.queue_is_full)
        timer.start()
        loss = loss_fn(embeddings, model.prototypes.weight)
        timer.stop()
        optimizer.zero_grad(set_to_none=True)
        timer.watch_backward(embeddings)
        loss.backward()
        if iteration < args.freeze_prototypes_niters:
            model.prototypes.weight.grad = None
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()

        loss_value = loss.item()
        now = time.perf_counter()
        seconds, tick = now - tick, now
        row = {
            "epoch": epoch,
            "iteration": iteration,
            "loss": loss_value,
            "lr": lr,
            "images_per_s": crops[0].shape[0] * world_size / seconds,
            "loss_time_share": timer.seconds / seconds,
            "queue_in_use": queue_in_use,
        }
        result.rows.append(row)
        bar.set_postfix(
            loss=f"{loss_value:.3f}",
            lr=f"{lr:.3g}",
            img_s=f"{row['images_per_s']:.0f}",
            loss_share=f"{100 * row['loss_time_share']:.0f}%",
        )
    bar.close()
    return result
