"""Drop-in for VISSL's SwAV loss (``vissl/losses/swav_loss.py``, ``distibuted_sinkhornknopp.py``).

``SwAVLoss(loss_config)`` / ``SwAVLoss.from_config(loss_config)`` with VISSL's config keys
(``temperature, crops_for_assign, num_crops, num_iters, epsilon, use_double_precision,
num_prototypes, embedding_dim, temp_hard_assignment_iters, output_dir, queue.start_iter,
queue.local_queue_length``) and ``forward(output, target)`` over
``output = [embedding (V·B, D), scores_head0 (V·B, K0), scores_head1, …]``:

- the loss is the mean over prototype heads of the SwAV loss of each head;
- ``use_double_precision``: Sinkhorn and log-softmax in float64 (codes rounded to float32,
  as VISSL does); the loss is 0-d float32 either way;
- for the first ``temp_hard_assignment_iters`` calls the codes are one-hot at their argmax;
- the queue: ``swav_criterion.local_emb_queue`` ``(|A|, L, D)`` holds embeddings shared
  by the heads, ``swav_criterion.local_queue{i}`` ``(|A|, L, K_i)`` their scores under head
  i, refreshed by ``swav_criterion.compute_queue_scores(head)`` (VISSL's
  ``SwAVUpdateQueueScoresHook`` calls it, unchanged); from iteration ``queue.start_iter``
  the score queue joins the Sinkhorn rows (after the batch) and the embedding queue takes
  the batch's assign-crop embeddings after each step. Buffers have VISSL's names and
  initialisation, so checkpoints load either way.
- the Sinkhorn sums run over every rank when torch.distributed is initialised; with
  ``num_iters=0`` the codes are ``softmax(scores/ε)``, as VISSL's final normalisation gives.

NaN or ±inf in the scores gives a non-finite loss (no check);
``check_finite_inputs=True`` (keyword only, on ``SwAVLoss`` and ``SwAVCriterion``) raises
ValueError naming the head's scores (or score queue) instead (one host sync).

Not reproduced: ``shk_powerlaw`` (raises ValueError); the dump of scores on a NaN loss
(``output_dir`` is kept but unused: the Sinkhorn here cannot overflow, so VISSL's inf
replacement and ``1e-12`` padding of empty prototypes have nothing to do).

``patch()`` makes VISSL's own ``SwAVCriterion.forward`` run through swav_kernels (configs
with ``shk_powerlaw`` keep VISSL's code); ``unpatch()`` restores it.

Where each entry point works, and what it was tested against (torch 2.14.1):

- The drop-ins ``SwAVLoss`` and ``SwAVCriterion`` work everywhere (they import nothing of
  VISSL). They are compared with VISSL 0.1.6's own ``vissl/losses/swav_loss.py`` and
  ``distibuted_sinkhornknopp.py``, loaded directly as files from the installed package with
  classy_vision's loss registry and iopath stubbed (tests/compat_upstream.py).
- ``patch()`` imports VISSL's package (``vissl.losses.swav_loss``), which no VISSL release
  allows beside a torch this package supports: VISSL 0.1.6 (the last release) needs fvcore,
  iopath, hydra-core 1.0.7 and setuptools < 81, and with them its bundled classy_vision still
  fails at import (it imports ``torchvision.datasets.kinetics.Kinetics400``, which torchvision
  0.29.1 does not have; measured). So ``patch()`` was tested only on VISSL's loss module loaded
  as in the tests; it applies wherever VISSL imports (an older stack, or a fork). Its errors say
  whether VISSL is missing or installed with a failing import (quoting that import's error), and
  name the drop-in.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..loss import sinkhorn, swapped_prediction_loss
from ..validation import (check_crops_for_assign, check_iterations, check_n_crops, check_positive_float,
                          check_same_device, check_tensor)
from ._common import check_inputs_finite, check_scores, default_process_group
from ._patching import Patch, Trainer, import_trainer

__all__ = ["SwAVCriterion", "SwAVLoss", "patch", "unpatch"]

_REQUIRED = object()


def _config(config, name: str, default=_REQUIRED):
    """``config.name`` for VISSL's AttrDict, a plain dict or any object with attributes."""
    if isinstance(config, Mapping):
        value = config.get(name, default)
    else:
        value = getattr(config, name, default)
    if value is _REQUIRED:
        raise ValueError(f"loss_config has no {name!r}; VISSL's swav_loss config needs it")
    return value


def _check_settings(prefix: str, temperature, crops_for_assign, num_crops, num_iters, epsilon, num_prototypes,
                    local_queue_length, embedding_dim, temp_hard_assignment_iters) -> None:
    """VISSL's swav_loss settings; errors name each as the caller wrote it: its config key after
    ``prefix`` (``loss_config.num_iters`` from ``SwAVLoss``, ``num_iters`` from ``SwAVCriterion``)."""
    check_positive_float(f"{prefix}temperature", temperature)
    if isinstance(num_crops, bool) or not isinstance(num_crops, numbers.Integral):
        raise TypeError(f"{prefix}num_crops must be an int (crops per image), got {type(num_crops).__name__}")
    n_crops = check_n_crops(num_crops, f"{prefix}num_crops")
    check_crops_for_assign(crops_for_assign, n_crops, f"{prefix}crops_for_assign")
    check_iterations(f"{prefix}num_iters", num_iters)
    check_positive_float(f"{prefix}epsilon", epsilon)
    heads = num_prototypes if isinstance(num_prototypes, Sequence) and not isinstance(num_prototypes, str) else None
    if not heads or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > 0 for k in heads):
        raise ValueError(f"{prefix}num_prototypes must be a list of prototype counts >= 1, one per head, "
                         f"got {num_prototypes!r}")
    queue_prefix = "loss_config.queue." if prefix else ""
    if check_iterations(f"{queue_prefix}local_queue_length", local_queue_length) > 0:
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, numbers.Integral) or embedding_dim < 1:
            raise ValueError(f"{prefix}embedding_dim must be an int >= 1 (the queue holds embeddings), "
                             f"got {embedding_dim!r}")
    check_iterations(f"{prefix}temp_hard_assignment_iters", temp_hard_assignment_iters)


def _check_head_scores(name: str, scores, num_crops: int, num_prototypes: int) -> None:
    """One head's scores: ``(num_crops·B, K)`` with this head's K prototypes."""
    check_scores(name, scores)
    if scores.shape[0] % num_crops or scores.shape[1] != num_prototypes:
        raise ValueError(f"{name} must have shape (num_crops·B, K) with num_crops={num_crops} and this head's "
                         f"num_prototypes K={num_prototypes}, got {tuple(scores.shape)}")


def _criterion_forward(self, scores: torch.Tensor, head_id: int) -> torch.Tensor:
    """VISSL's ``SwAVCriterion.forward``: the SwAV loss of one head's ``(V·B, K)`` scores."""
    _check_settings("", self.temperature, self.crops_for_assign, self.num_crops, self.nmb_sinkhornknopp_iters,
                    self.epsilon, self.num_prototypes, self.local_queue_length, self.embedding_dim,
                    self.temp_hard_assignment_iters)
    _check_head_scores("scores", scores, self.num_crops, self.num_prototypes[head_id])
    batch = scores.shape[0] // self.num_crops
    crops = [int(c) for c in self.crops_for_assign]
    backend = getattr(self, "backend", "auto")
    queue = getattr(self, "local_queue" + str(head_id)) if self.use_queue else None
    check_inputs_finite(getattr(self, "check_finite_inputs", False),
                        {f"scores of head {head_id}": scores, f"local_queue{head_id}": queue})
    with torch.no_grad():
        rows = scores.detach().view(self.num_crops, batch, -1)[crops]
        if self.use_queue:
            rows = torch.cat((rows, queue.to(rows.dtype)), dim=1)
        if self.use_double_prec:
            rows = rows.double()
        codes = sinkhorn(rows, epsilon=self.epsilon, iterations=self.nmb_sinkhornknopp_iters,
                         process_group=default_process_group(), backend=backend,
                         check_finite_inputs=False)[:, :batch]
        if self.nmb_sinkhornknopp_iters == 0:  # VISSL's last step makes every sample's codes sum to 1
            codes = codes / codes.sum(dim=-1, keepdim=True)
        codes = codes.float()
        if bool(self.num_iteration < self.temp_hard_assignment_iters):
            codes = F.one_hot(codes.argmax(dim=-1), codes.shape[-1]).to(codes.dtype)
    predictions = scores.double() if self.use_double_prec else scores
    return swapped_prediction_loss(predictions, codes, crops, self.temperature, backend,
                                   check_finite_inputs=False).float()


class SwAVCriterion(nn.Module):
    """VISSL's ``SwAVCriterion`` (one head at a time) computed by swav_kernels; arguments
    and attributes as in VISSL, plus ``backend`` and ``check_finite_inputs`` (keyword only;
    True: raise ValueError if the scores or the score queue hold NaN or ±inf, one host sync;
    False, the default: they give a non-finite loss)."""

    def __init__(
        self,
        temperature: float,
        crops_for_assign,
        num_crops: int,
        num_iters: int,
        epsilon: float,
        use_double_prec: bool,
        num_prototypes,
        local_queue_length: int,
        embedding_dim: int,
        temp_hard_assignment_iters: int,
        output_dir: str,
        shk_powerlaw: float = 0.0,
        *,
        backend: str = "auto",
        check_finite_inputs: bool = False,
    ):
        super().__init__()
        if shk_powerlaw:
            raise ValueError(f"shk_powerlaw={shk_powerlaw} is not supported by swav_kernels; use 0.0")
        _check_settings("", temperature, crops_for_assign, num_crops, num_iters, epsilon, num_prototypes,
                        local_queue_length, embedding_dim, temp_hard_assignment_iters)
        self.temperature = temperature
        self.crops_for_assign = list(crops_for_assign)
        self.num_crops = num_crops
        self.nmb_sinkhornknopp_iters = num_iters
        self.epsilon = epsilon
        self.use_double_prec = use_double_prec
        self.num_prototypes = list(num_prototypes)
        self.nmb_heads = len(self.num_prototypes)
        self.embedding_dim = embedding_dim
        self.temp_hard_assignment_iters = temp_hard_assignment_iters
        self.local_queue_length = local_queue_length
        self.output_dir = output_dir
        self.shk_powerlaw = shk_powerlaw
        self.backend = backend
        self.check_finite_inputs = check_finite_inputs
        self.register_buffer("num_iteration", torch.zeros(1, dtype=torch.long))
        self.use_queue = False
        if local_queue_length > 0:
            self.initialize_queue()

    forward = _criterion_forward

    @torch.no_grad()
    def update_emb_queue(self, emb: torch.Tensor) -> None:
        """Shift the embedding queue and put the assign crops of ``emb (V·B, D)`` in front."""
        batch = len(emb) // self.num_crops
        for i, crop_id in enumerate(self.crops_for_assign):
            queue = self.local_emb_queue[i]
            queue[batch:] = queue[:-batch].clone()
            queue[:batch] = emb[crop_id * batch:(crop_id + 1) * batch]

    @torch.no_grad()
    def compute_queue_scores(self, head) -> None:
        """Score the embedding queue with each of ``head``'s ``prototypes{i}`` layers."""
        for crop_index in range(len(self.crops_for_assign)):
            for i in range(head.nmb_heads):
                scores = getattr(head, "prototypes" + str(i))(self.local_emb_queue[crop_index])
                getattr(self, "local_queue" + str(i))[crop_index] = scores

    def initialize_queue(self) -> None:
        """VISSL's initial queues: scores uniform in [-1, 1), embeddings uniform in ±1/√(D/3)."""
        for i in range(self.nmb_heads):
            scores = torch.rand(len(self.crops_for_assign), self.local_queue_length, self.num_prototypes[i]) * 2 - 1
            self.register_buffer("local_queue" + str(i), scores)
        bound = 1.0 / math.sqrt(self.embedding_dim / 3)
        embeddings = torch.rand(len(self.crops_for_assign), self.local_queue_length, self.embedding_dim)
        self.register_buffer("local_emb_queue", embeddings.mul_(2 * bound).add_(-bound))


class SwAVLoss(nn.Module):
    """VISSL's ``SwAVLoss`` computed by swav_kernels.

    ``forward(output, target=None)``: ``output = [embedding, scores_head0, …]``; returns the
    0-d float32 loss averaged over heads (``target`` is ignored, as in VISSL).
    ``check_finite_inputs`` (keyword only): raise ValueError naming the head whose scores
    hold NaN or ±inf (one host sync per head); False (default): a non-finite loss.
    """

    def __init__(self, loss_config, *, backend: str = "auto", check_finite_inputs: bool = False):
        super().__init__()
        self.loss_config = loss_config
        queue = _config(loss_config, "queue")
        self.queue_start_iter = _config(queue, "start_iter")
        settings = {name: _config(loss_config, name) for name in (
            "temperature", "crops_for_assign", "num_crops", "num_iters", "epsilon", "num_prototypes", "embedding_dim",
            "temp_hard_assignment_iters")}
        local_queue_length = _config(queue, "local_queue_length")
        _check_settings("loss_config.", local_queue_length=local_queue_length, **settings)
        self.swav_criterion = SwAVCriterion(
            settings["temperature"],
            settings["crops_for_assign"],
            settings["num_crops"],
            settings["num_iters"],
            settings["epsilon"],
            _config(loss_config, "use_double_precision"),
            settings["num_prototypes"],
            local_queue_length,
            settings["embedding_dim"],
            settings["temp_hard_assignment_iters"],
            _config(loss_config, "output_dir", ""),
            _config(loss_config, "shk_powerlaw", 0.0),
            backend=backend,
            check_finite_inputs=check_finite_inputs,
        )

    @classmethod
    def from_config(cls, loss_config, *, backend: str = "auto", check_finite_inputs: bool = False) -> "SwAVLoss":
        return cls(loss_config, backend=backend, check_finite_inputs=check_finite_inputs)

    def forward(self, output, target=None) -> torch.Tensor:
        criterion = self.swav_criterion
        if not isinstance(output, Sequence) or len(output) < 2:
            raise ValueError("output must be [embedding, scores_head0, ...] with at least one head")
        if len(output) - 1 != criterion.nmb_heads:
            raise ValueError(f"output holds {len(output) - 1} head(s) of scores after the embedding, but "
                             f"loss_config.num_prototypes names {criterion.nmb_heads}")
        for head_id, head_scores in enumerate(output[1:]):
            name = f"output[{head_id + 1}]"
            _check_head_scores(name, head_scores, criterion.num_crops, criterion.num_prototypes[head_id])
            check_same_device(name, head_scores, "output[1]", output[1])
            if head_scores.shape[0] != output[1].shape[0]:
                raise ValueError(f"{name} has {head_scores.shape[0]} rows but output[1] has {output[1].shape[0]}; "
                                 "every head scores the same num_crops·B rows")
        if criterion.local_queue_length > 0:  # the embedding fills the queue (VISSL reads it only then)
            embedding = check_tensor("output[0]", output[0], 2)
            if embedding.shape != (output[1].shape[0], criterion.embedding_dim):
                raise ValueError(f"output[0] (the embedding) must have shape (num_crops·B={output[1].shape[0]}, "
                                 f"loss_config.embedding_dim={criterion.embedding_dim}), got {tuple(embedding.shape)}")
            check_same_device("output[0]", embedding, "output[1]", output[1])
        criterion.use_queue = criterion.local_queue_length > 0 and bool(
            criterion.num_iteration >= self.queue_start_iter
        )
        loss = 0
        for head_id, head_scores in enumerate(output[1:]):
            loss = loss + criterion(head_scores, head_id)
        loss = loss / (len(output) - 1)
        criterion.num_iteration += 1
        if criterion.use_queue:
            criterion.update_emb_queue(output[0].detach())
        return loss


_PATCH = Patch()


def _known_failure(version, error) -> str | None:
    if "Kinetics400" in str(error):
        return ("VISSL's bundled classy_vision imports torchvision.datasets.kinetics.Kinetics400, which the "
                "torchvision releases for the torch >= 2.11 that swav_kernels needs do not have (measured: 0.29.1).")
    if version == "0.1.6":
        return ("VISSL 0.1.6 needs fvcore, iopath, hydra-core 1.0.7 and setuptools < 81, and even with them its "
                "bundled classy_vision fails at import beside torchvision 0.29.1 (no Kinetics400).")
    return None


VISSL = Trainer(
    name="VISSL",
    distribution="vissl",
    works_with=("a VISSL that imports beside your torch {torch}; no release does beside torch >= 2.11 (0.1.6 measured "
                "with torchvision 0.29.1), so patch() was tested only on VISSL 0.1.6's loss module loaded directly"),
    drop_in=("from swav_kernels.compat.vissl import SwAVLoss (SwAVLoss(loss_config) with VISSL's config keys and "
             "forward(output, target))"),
    known_failure=_known_failure,
)


def patch() -> bool:
    """Make VISSL's ``SwAVCriterion.forward`` run through swav_kernels. Returns False if
    already patched. ImportError where VISSL does not import (no release does beside a
    supported torch), saying what failed and naming the drop-in."""
    module = import_trainer("vissl.losses.swav_loss", VISSL)
    original = module.SwAVCriterion.forward

    def forward(self, scores, head_id):
        if getattr(self, "shk_powerlaw", 0.0):
            return original(self, scores, head_id)
        return _criterion_forward(self, scores, head_id)

    return _PATCH.apply([(module.SwAVCriterion, "forward", forward)])


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
