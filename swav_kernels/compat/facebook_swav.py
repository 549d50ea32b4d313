"""Drop-in for the SwAV loss of facebookresearch/swav ``main_swav.py``.

- ``distributed_sinkhorn(out, epsilon=0.05, sinkhorn_iterations=3)``: ``main_swav.py``'s
  function with its globals (``args.epsilon``, ``args.sinkhorn_iterations``) as arguments;
  codes ``(N, K)`` in ``out``'s dtype; sums over every rank when torch.distributed is
  initialised (the original always reduces).
- ``swav_loss_block(output, embedding, prototypes, queue, use_the_queue, ...)`` replaces the
  whole ``# ============ swav loss ... ============`` block of ``train()``:

      loss, use_the_queue = swav_loss_block(output, embedding, model.module.prototypes.weight,
                                            queue, use_the_queue, args)

  (``args`` supplies ``nmb_crops, crops_for_assign, temperature, epsilon,
  sinkhorn_iterations``; keywords of the same names work too.)

  The queue holds *embeddings* ``(|A|, L, D)`` of this rank, newest first; once full (its
  last row non-zero) or once ``use_the_queue`` is set, it is scored with the current
  prototypes and prepended to the Sinkhorn rows; then (whether used or not) it shifts by
  ``B`` rows and the batch's assign-crop embeddings enter at the front, in place, as the
  original does. The loss is 0-d in ``output``'s dtype (float32 under autocast).

NaN or ±inf in ``output`` (or in the queue that is used) gives a non-finite loss, as in
``main_swav.py`` (no check, no host sync); ``check_finite_inputs=True`` (keyword only, on
both functions) raises ValueError naming the input instead (one host sync per call).

Differences, all deliberate: no overflow in the Sinkhorn; the decision to use the queue is
taken once for all assign crops (the original decides per crop; the two differ only if a
stored embedding is exactly zero in one crop's queue and not in another's); with
``sinkhorn_iterations=0`` and unequal rows per rank the codes are scaled by the true global
row count. The original is a script, so there is no ``patch()``: the block is one call.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..loss import sinkhorn, swav_loss
from ..validation import (check_crops_for_assign, check_iterations, check_n_crops, check_positive_float,
                          check_same_device, check_tensor)
from ._common import check_inputs_finite, check_scores, default_process_group, loss_dtype

__all__ = ["distributed_sinkhorn", "swav_loss_block"]

# main_swav.py's argparse defaults of the settings the loss block reads from ``args``
DEFAULTS = {"nmb_crops": [2], "crops_for_assign": [0, 1], "temperature": 0.1, "epsilon": 0.05,
            "sinkhorn_iterations": 3}


@torch.no_grad()
def distributed_sinkhorn(
    out: torch.Tensor,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    *,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """Codes ``(N, K)`` of scores ``out (N, K)`` in ``out``'s dtype.

    ``process_group``: None reduces over the default group when torch.distributed is
    initialised, as ``main_swav.py`` does, and runs locally otherwise.
    ``check_finite_inputs``: raise ValueError if ``out`` holds NaN or ±inf (one host sync);
    by default the codes are then non-finite, as in ``main_swav.py``."""
    check_scores("out", out)
    check_positive_float("epsilon", epsilon)
    check_iterations("sinkhorn_iterations", sinkhorn_iterations)
    check_inputs_finite(check_finite_inputs, {"out": out})
    codes = sinkhorn(out, epsilon=epsilon, iterations=sinkhorn_iterations,
                     process_group=default_process_group(process_group), backend=backend,
                     check_finite_inputs=False)
    return codes.to(out.dtype)


def _check_queue(queue, n_assign: int, batch: int, dim: int) -> torch.Tensor:
    check_tensor("queue", queue, 3)
    if queue.shape[0] != n_assign or queue.shape[2] != dim:
        raise ValueError(
            f"queue must have shape (len(crops_for_assign)={n_assign}, L, feat_dim={dim}), got {tuple(queue.shape)}"
        )
    if queue.shape[1] < batch:
        raise ValueError(
            f"queue holds {queue.shape[1]} rows per assign crop, fewer than the batch of {batch}; "
            "main_swav.py makes queue_length a multiple of batch_size × world_size"
        )
    return queue


def swav_loss_block(
    output: torch.Tensor,
    embedding: torch.Tensor,
    prototypes: torch.Tensor,
    queue: torch.Tensor | None = None,
    use_the_queue: bool = False,
    args=None,
    *,
    nmb_crops: Sequence[int] | None = None,
    crops_for_assign: Sequence[int] | None = None,
    temperature: float | None = None,
    epsilon: float | None = None,
    sinkhorn_iterations: int | None = None,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> tuple[torch.Tensor, bool]:
    """The loss block of ``main_swav.py``'s ``train()``.

    Args:
        output: crop-major scores ``(V·B, K)`` (the model's prototype output).
        embedding: crop-major embeddings ``(V·B, D)`` (detached here, as in the original).
        prototypes: the prototype weight ``(K, D)`` that scores the queue.
        queue: ``(|A|, L, D)`` queue of embeddings or None; updated in place.
        use_the_queue: the trainer's flag (False at the start of every epoch).
        args: main_swav.py's ``args`` (or None): the settings below default to its attributes,
            then to main_swav.py's defaults (``DEFAULTS``).
        nmb_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations: as ``args.*``.
        process_group: None: the default group when torch.distributed is initialised.
        backend: swav_kernels backend.
        check_finite_inputs: raise ValueError naming ``output`` (or, with a queue,
            ``embedding``, ``queue`` or ``prototypes``) if it holds NaN or ±inf (one host
            sync). False (default): non-finite inputs give a non-finite loss, as in
            ``main_swav.py``.

    Returns:
        ``(loss, use_the_queue)``: the 0-d loss and the flag to pass at the next step.
    """
    given = dict(nmb_crops=nmb_crops, crops_for_assign=crops_for_assign, temperature=temperature,
                 epsilon=epsilon, sinkhorn_iterations=sinkhorn_iterations)
    settings, spelled = {}, {}  # each setting, and its name as the caller gave it (keyword or args.name)
    for name, value in given.items():
        if value is not None:
            settings[name], spelled[name] = value, name
        elif hasattr(args, name):
            settings[name], spelled[name] = getattr(args, name), f"args.{name}"
        else:
            settings[name], spelled[name] = DEFAULTS[name], name
    nmb_crops = settings["nmb_crops"]
    n_crops = check_n_crops(nmb_crops, spelled["nmb_crops"])
    assign = check_crops_for_assign(settings["crops_for_assign"], n_crops, spelled["crops_for_assign"])
    for name in ("temperature", "epsilon"):
        check_positive_float(spelled[name], settings[name])
    check_iterations(spelled["sinkhorn_iterations"], settings["sinkhorn_iterations"])
    check_scores("output", output)
    check_tensor("embedding", embedding, 2)
    check_same_device("embedding", embedding, "output", output)
    if output.shape[0] % n_crops or embedding.shape[0] != output.shape[0]:
        raise ValueError(
            f"output {tuple(output.shape)} and embedding {tuple(embedding.shape)} must both have V·B rows "
            f"for the {n_crops} crops of {spelled['nmb_crops']}={nmb_crops!r}"
        )
    batch = output.shape[0] // n_crops
    queue_scores = None
    if queue is not None:
        _check_queue(queue, len(assign), batch, embedding.shape[1])
        check_same_device("queue", queue, "output", output)
        check_tensor("prototypes", prototypes, 2)
        check_same_device("prototypes", prototypes, "output", output)
        if prototypes.shape != (output.shape[1], embedding.shape[1]):
            raise ValueError(f"prototypes must have shape (K={output.shape[1]}, D={embedding.shape[1]}) to match "
                             f"output and embedding, got {tuple(prototypes.shape)}")
    with_queue = queue is not None
    check_inputs_finite(check_finite_inputs, {"output": output, "embedding": embedding if with_queue else None,
                                              "queue": queue, "prototypes": prototypes if with_queue else None})
    if queue is not None:
        with torch.no_grad():
            if not use_the_queue and bool((queue[:, -1] != 0).any()):
                use_the_queue = True
            if use_the_queue:
                queue_scores = queue.to(prototypes.dtype) @ prototypes.detach().t()
    loss = swav_loss(
        output,
        nmb_crops=n_crops,
        crops_for_assign=assign,
        temperature=settings["temperature"],
        epsilon=settings["epsilon"],
        sinkhorn_iterations=settings["sinkhorn_iterations"],
        queue_scores=queue_scores,
        process_group=default_process_group(process_group),
        backend=backend,
        check_finite_inputs=False,
    )
    if queue is not None:  # shift and refill (main_swav.py does it before its Sinkhorn: same result)
        with torch.no_grad():
            new = embedding.detach().reshape(n_crops, batch, -1)[list(assign)]
            queue[:, batch:] = queue[:, :-batch].clone()
            queue[:, :batch] = new.to(queue.dtype)
    return loss.to(loss_dtype(output)), use_the_queue
